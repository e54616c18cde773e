"""The one mapping of the store's gRPC status codes to exceptions, for every gateway.

The store answers each repository error with one status code (``store/servicer.py``:
NOT_FOUND, ALREADY_EXISTS, INVALID_ARGUMENT, FAILED_PRECONDITION, RESOURCE_EXHAUSTED; UNAVAILABLE
and DATA_LOSS for its backend). What a code means depends on the RPC (NOT_FOUND of
GetMessageContent is the message, of CopyMessages the destination mailbox), so the table below
says, per RPC, which codes are a definite answer; every other code, deadlines and an unreachable
store included, is :class:`~postmesh.common.backend.BackendUnavailable` (a failure that may pass:
IMAP ``NO [UNAVAILABLE]``, POP3 ``-ERR [SYS/TEMP]``).
"""

from __future__ import annotations

import grpc
from grpc import StatusCode as _Code

from postmesh.common.backend import unavailable


class StoreAnswer(Exception):
    """A definite answer of the store that the request cannot be done (not a failure that may
    pass). ``fallback`` is the message when the store sent no details; None: the subject (the
    mailbox name or UID asked about)."""

    fallback: str | None = None


class MailboxNotFound(StoreAnswer):
    """The mailbox does not exist (IMAP ``NO [NONEXISTENT]``)."""


class MessageNotFound(StoreAnswer):
    """The message was expunged meanwhile (IMAP ``NO [EXPUNGEISSUED]``, POP3 "expunged by
    another session")."""


class MailboxExists(StoreAnswer):
    """CREATE/RENAME onto a name that exists (IMAP ``NO [ALREADYEXISTS]``, RFC 5530)."""


class MailboxHasChildren(StoreAnswer):
    """DELETE of a \\Noselect name with inferiors (IMAP ``NO [HASCHILDREN]``, RFC 9051
    §6.3.5)."""


class MailboxRejected(StoreAnswer):
    """The store refused a mailbox name or special-use attribute (INVALID_ARGUMENT): the
    message says why."""

    fallback = "invalid mailbox name"


class SearchRejected(StoreAnswer):
    """The store refused the search criteria (too many keys, nested too deep): a client error."""

    fallback = "invalid search criteria"


class OverQuota(StoreAnswer):
    """The user's storage or message quota would be exceeded (IMAP ``NO [OVERQUOTA]``,
    RFC 9208 §4.1)."""

    fallback = "quota exceeded"


class StoreRefused(StoreAnswer):
    """The store refused a request as invalid for its arguments or the mailbox's state (a size
    that does not match the content, a \\Noselect mailbox): ``NO`` with the store's reason."""

    fallback = "refused by the store"


_MAILBOX_READ: dict[_Code, type[StoreAnswer]] = {_Code.NOT_FOUND: MailboxNotFound}
_MAILBOX_ADMIN: dict[_Code, type[StoreAnswer]] = {
    _Code.NOT_FOUND: MailboxNotFound,
    _Code.ALREADY_EXISTS: MailboxExists,
    _Code.INVALID_ARGUMENT: MailboxRejected,
    # DELETE of a \Noselect name with inferiors (INBOX is refused by the gateway first).
    _Code.FAILED_PRECONDITION: MailboxHasChildren,
}
_WRITE: dict[_Code, type[StoreAnswer]] = {
    _Code.NOT_FOUND: MailboxNotFound,
    _Code.RESOURCE_EXHAUSTED: OverQuota,
    _Code.INVALID_ARGUMENT: StoreRefused,
    _Code.FAILED_PRECONDITION: StoreRefused,
}

# Per RPC, the status codes that are an answer. INVALID_ARGUMENT of a read is not listed: the
# gateways validate their requests, so it is a bug between the two, reported as unavailable.
ANSWERS: dict[str, dict[_Code, type[StoreAnswer]]] = {
    "GetMailbox": _MAILBOX_READ,
    "ListMessages": _MAILBOX_READ,
    "ListMessageFlags": _MAILBOX_READ,
    "GetMessageMeta": _MAILBOX_READ,
    "GetChanges": _MAILBOX_READ,
    "ClaimRecent": _MAILBOX_READ,
    "StoreFlags": _MAILBOX_READ,
    "Expunge": _MAILBOX_READ,
    "GetMessageContent": {_Code.NOT_FOUND: MessageNotFound},
    "GetSmallMessageContent": {_Code.NOT_FOUND: MessageNotFound},
    "Search": {_Code.NOT_FOUND: MailboxNotFound, _Code.INVALID_ARGUMENT: SearchRejected},
    "CreateMailbox": _MAILBOX_ADMIN,
    "DeleteMailbox": _MAILBOX_ADMIN,
    "RenameMailbox": _MAILBOX_ADMIN,
    "SetSubscription": _MAILBOX_ADMIN,
    "Append": _WRITE,
    "CopyMessages": _WRITE,
    "MoveMessages": _WRITE,
}


def store_error(rpc: str, err: grpc.aio.AioRpcError, subject: object) -> Exception:
    """The exception for a failed store call: a :class:`StoreAnswer` when the code is an answer
    of ``rpc``, else a logged BackendUnavailable. ``subject`` is what the call was about (the
    mailbox, or the UID for GetMessageContent), the message when the store gave none."""
    cls = ANSWERS.get(rpc, {}).get(err.code())
    if cls is None:
        return unavailable(rpc, err)
    if cls in (MailboxNotFound, MessageNotFound):
        return cls(subject)
    return cls(err.details() or cls.fallback or subject)
