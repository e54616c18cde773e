"""The one mapping of the store's status codes (postmesh.common.store_client.errors)."""

from __future__ import annotations

import grpc
import pytest
from grpc.aio import AioRpcError, Metadata

from postmesh.api.store.v1 import store_pb2
from postmesh.common.backend import BackendUnavailable
from postmesh.common.store_client.errors import (
    ANSWERS,
    MailboxExists,
    MailboxHasChildren,
    MailboxNotFound,
    MailboxRejected,
    MessageNotFound,
    OverQuota,
    SearchRejected,
    StoreRefused,
    store_error,
)

C = grpc.StatusCode


def rpc_error(code: grpc.StatusCode, details: str = "") -> AioRpcError:
    return AioRpcError(code, Metadata(), Metadata(), details)


def test_every_rpc_named_is_a_store_rpc() -> None:
    methods = store_pb2.DESCRIPTOR.services_by_name["StoreService"].methods_by_name
    assert set(ANSWERS) <= set(methods)


@pytest.mark.parametrize(
    ("rpc", "code", "details", "subject", "cls", "text"),
    [
        ("GetMailbox", C.NOT_FOUND, "no such mailbox", "Work", MailboxNotFound, "Work"),
        ("GetMessageContent", C.NOT_FOUND, "", 7, MessageNotFound, "7"),
        ("CopyMessages", C.NOT_FOUND, "", "Dest", MailboxNotFound, "Dest"),
        ("Append", C.RESOURCE_EXHAUSTED, "", "INBOX", OverQuota, "quota exceeded"),
        ("MoveMessages", C.RESOURCE_EXHAUSTED, "over 5 MB", "X", OverQuota, "over 5 MB"),
        ("Append", C.INVALID_ARGUMENT, "size mismatch", "INBOX", StoreRefused, "size mismatch"),
        ("Append", C.FAILED_PRECONDITION, "", "Parent", StoreRefused, "refused by the store"),
        ("CreateMailbox", C.ALREADY_EXISTS, "", "Work", MailboxExists, "Work"),
        ("RenameMailbox", C.INVALID_ARGUMENT, "", "a", MailboxRejected, "invalid mailbox name"),
        ("DeleteMailbox", C.FAILED_PRECONDITION, "has inferiors", "P", MailboxHasChildren,
         "has inferiors"),
        ("Search", C.INVALID_ARGUMENT, "", "INBOX", SearchRejected, "invalid search criteria"),
        ("Expunge", C.NOT_FOUND, "", "Trash", MailboxNotFound, "Trash"),
    ],
)  # fmt: skip
def test_answers(
    rpc: str, code: grpc.StatusCode, details: str, subject: object, cls: type, text: str
) -> None:
    err = store_error(rpc, rpc_error(code, details), subject)
    assert type(err) is cls
    assert str(err) == text


@pytest.mark.parametrize(
    ("rpc", "code"),
    [
        ("GetMailbox", C.UNAVAILABLE),
        ("Append", C.DEADLINE_EXCEEDED),
        ("Search", C.DATA_LOSS),
        ("GetQuota", C.NOT_FOUND),  # no answer listed for the RPC
        ("GetMailbox", C.INVALID_ARGUMENT),  # a gateway bug, not the user's
        ("MaildropLock.Acquire", C.INTERNAL),
    ],
)
def test_everything_else_may_pass(rpc: str, code: grpc.StatusCode) -> None:
    err = store_error(rpc, rpc_error(code, "boom"), "INBOX")
    assert isinstance(err, BackendUnavailable)
    assert str(err) == f"{rpc}: {code.name}"
