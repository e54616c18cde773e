"""Quota arithmetic shared by the backends (RFC 9208 STORAGE and MESSAGE resources)."""

from __future__ import annotations

from postmesh.store.errors import QuotaExceeded
from postmesh.store.model import Quota


def effective(own: int | None, default: int) -> int:
    """A user's limit: their own when set (0 = unlimited), else the service default."""
    return default if own is None else own


def check(quota: Quota, add_bytes: int, add_messages: int) -> None:
    """Refuse a change that would take usage over a limit. Removing never fails, so a user over
    quota (after the limit was lowered) can always expunge (RFC 9208 section 4.1)."""
    if (
        quota.storage_limit
        and add_bytes > 0
        and quota.storage_used + add_bytes > quota.storage_limit
    ):
        raise QuotaExceeded(
            f"quota exceeded: storage {quota.storage_used}/{quota.storage_limit} bytes"
            f" (message of {add_bytes} bytes)"
        )
    if (
        quota.message_limit
        and add_messages > 0
        and quota.messages_used + add_messages > quota.message_limit
    ):
        raise QuotaExceeded(
            f"quota exceeded: messages {quota.messages_used}/{quota.message_limit}"
            f" ({add_messages} more)"
        )
