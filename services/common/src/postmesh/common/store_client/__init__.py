"""The gateways' typed client of the store (``store.proto``'s StoreService and
MaildropLockService): :class:`StoreClient`, the values it returns (:mod:`.types`) and the one
mapping of the store's status codes to exceptions (:mod:`.errors`)."""

from postmesh.common.store_client.client import StoreClient
from postmesh.common.store_client.errors import (
    MailboxExists,
    MailboxHasChildren,
    MailboxNotFound,
    MailboxRejected,
    MessageNotFound,
    OverQuota,
    SearchRejected,
    StoreAnswer,
    StoreRefused,
)

__all__ = [
    "MailboxExists",
    "MailboxHasChildren",
    "MailboxNotFound",
    "MailboxRejected",
    "MessageNotFound",
    "OverQuota",
    "SearchRejected",
    "StoreAnswer",
    "StoreClient",
    "StoreRefused",
]
