"""Errors of the repository interface; the gRPC layer maps each to one status code."""

from __future__ import annotations


class StoreError(Exception):
    """Base of the errors a repository raises on purpose."""


class InvalidArgument(StoreError):
    """Bad input from the caller (INVALID_ARGUMENT)."""


class NotFound(StoreError):
    """No such mailbox or message (NOT_FOUND)."""


class AlreadyExists(StoreError):
    """The mailbox exists already (ALREADY_EXISTS)."""


class Unavailable(StoreError):
    """A transient condition; the caller should retry (UNAVAILABLE)."""


class DataLoss(StoreError):
    """Stored content is missing or damaged (DATA_LOSS); never expected, always logged."""
