"""Errors of the repository interface; the gRPC layer maps each to one status code."""

from __future__ import annotations


class StoreError(Exception):
    """Base of the errors a repository raises on purpose."""


class InvalidArgument(StoreError):
    """Bad input from the caller (INVALID_ARGUMENT)."""


class NotFound(StoreError):
    """No such user, mailbox or message (NOT_FOUND)."""


class UnknownUser(NotFound):
    """The user was never provisioned (NOT_FOUND "no such user")."""

    def __init__(self, user: str) -> None:
        super().__init__(f"no such user {user!r}")


class AlreadyExists(StoreError):
    """The mailbox exists already (ALREADY_EXISTS)."""


class FailedPrecondition(StoreError):
    """Not allowed in the current state: deleting INBOX, selecting a \\Noselect parent
    (FAILED_PRECONDITION)."""


class QuotaExceeded(StoreError):
    """The user's storage or message quota would be exceeded (RESOURCE_EXHAUSTED; RFC 9208:
    IMAP answers NO [OVERQUOTA], SMTP 452/552 4.2.2 / 5.2.2)."""


class Unavailable(StoreError):
    """A transient condition; the caller should retry (UNAVAILABLE)."""


class DataLoss(StoreError):
    """Stored content is missing or damaged (DATA_LOSS); never expected, always logged."""
