"""Secrets in settings: a value from the environment or from a mounted file, never printed.

Every secret setting is a :class:`pydantic.SecretStr` (its repr and any settings dump show
``**********``) with a ``*_FILE`` sibling naming a file that holds it, as Kubernetes mounts a
Secret's key (docs/adr/0032-secrets-of-the-bus-and-database-connections.md). The file is read
when the service makes its Kafka or MongoDB clients (at start): a rotated Secret needs a restart.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import SecretStr

REDACTED = "**********"


def check_secret_file(path: Path | None) -> Path | None:
    """For a field validator: the file must exist and be readable now, so a wrong mount fails
    at start with the variable's name instead of at the first connection."""
    if path is None:
        return None
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read the secret file: {exc.strerror}") from None
    if not text.strip():
        raise ValueError("the secret file is empty")
    return path


def read_secret(value: SecretStr | None, file: Path | None) -> str | None:
    """The secret from ``file`` (its content without the trailing newline a ``kubectl create
    secret --from-file`` or an editor leaves) when set, else ``value``; None when neither."""
    if file is not None:
        return file.read_text().rstrip("\r\n")
    if value is not None:
        return value.get_secret_value()
    return None


def redact_url(url: str) -> str:
    """``scheme://user:password@host/...`` with the password (and any query option named like a
    password, as tlsCertificateKeyFilePassword) replaced, for log lines and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hosts = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{quote(unquote(user), safe='')}:{REDACTED}@{hosts}"
    options = []
    for item in parts.query.split("&") if parts.query else []:
        key, sep, _ = item.partition("=")
        options.append(f"{key}{sep}{REDACTED}" if "password" in key.lower() else item)
    return urlunsplit((parts.scheme, netloc, parts.path, "&".join(options), ""))
