"""The bearer token of the admin REST APIs (auth's, and delivery's queue admin): one secret for
the whole system, POSTMESH_ADMIN_TOKEN, or on one host a token made once in
<data_dir>/admin-token by whichever service starts first."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def admin_token(configured: str | None, data_dir: Path) -> str:
    if configured:
        return configured
    path = data_dir / "admin-token"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f"admin-token.{os.getpid()}.tmp")
    tmp.write_text(token + "\n")
    tmp.chmod(0o600)
    try:
        # link, not replace: a token another service made meanwhile is kept, never overwritten.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()
