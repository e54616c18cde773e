"""Bearer tokens of the admin REST APIs (auth's, and delivery's queue admin).

The admin token is one secret for the whole system, POSTMESH_ADMIN_TOKEN, or on one host a token
made once in <data_dir>/admin-token by whichever service starts first. Auth also issues
domain-admin tokens (``pmda_<id>_<secret>``), kept there only as SHA-256 digests
(docs/adr/0026-admin-token-roles.md); this module holds what both APIs need to check tokens."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from postmesh.common.config import ServiceSettings
from postmesh.common.secrets import check_secret_file, read_secret

# A domain-admin token: the prefix, a public id (the repository key) and 256 random bits.
DOMAIN_ADMIN_PREFIX = "pmda_"
_DOMAIN_ADMIN = re.compile(r"^pmda_([0-9a-f]{16})_[A-Za-z0-9_-]{43}$")


class AdminTokenSettings(ServiceSettings):
    """The admin token settings of the services with an admin API (auth, delivery)."""

    # Bearer token of the admin role of the admin APIs (auth's and delivery's queue API: one
    # secret; domain-admin tokens are issued through auth's API, ADR 26). Unset: the one in
    # <data_dir>/admin-token, made by whichever service starts first. Never logged.
    admin_token: SecretStr | None = Field(default=None, min_length=16)
    # A file holding the admin token (a mounted Secret), instead of POSTMESH_ADMIN_TOKEN.
    admin_token_file: Path | None = None

    @field_validator("admin_token_file")
    @classmethod
    def _readable_token_file(cls, v: Path | None) -> Path | None:
        return check_secret_file(v)

    @model_validator(mode="after")
    def _one_token_source(self) -> AdminTokenSettings:
        if self.admin_token is not None and self.admin_token_file is not None:
            raise ValueError("set POSTMESH_ADMIN_TOKEN or POSTMESH_ADMIN_TOKEN_FILE, not both")
        return self

    def admin_token_value(self) -> str:
        """The configured token, else the one shared through data_dir (made if missing)."""
        return admin_token(read_secret(self.admin_token, self.admin_token_file), self.data_dir)


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


def token_digest(token: str) -> str:
    """SHA-256 of a token, hex: what is stored and compared. A token carries 256 random bits,
    so a fast hash is enough (nothing to brute-force, unlike a password)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def same_token(presented: str, expected: str) -> bool:
    """Constant-time comparison. Digests first: compare_digest returns early on a length
    difference, and equal-length digests hide the expected token's length."""
    return hmac.compare_digest(token_digest(presented), token_digest(expected))


def new_domain_admin_token() -> tuple[str, str]:
    """(id, token): the id is public (listed, used to revoke); the token is shown once."""
    token_id = secrets.token_hex(8)
    return token_id, f"{DOMAIN_ADMIN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"


def domain_admin_token_id(token: str) -> str | None:
    """The id of a well-formed domain-admin token, else None (no look-up for garbage)."""
    m = _DOMAIN_ADMIN.match(token)
    return m.group(1) if m else None
