"""RCPT verdicts for every kind auth answers, and who owns an address for the sender check."""

from __future__ import annotations

from typing import Any, cast

import pytest

from postmesh.api.auth.v1 import auth_pb2, auth_pb2_grpc
from postmesh.api.store.v1 import store_pb2_grpc
from postmesh.smtp_edge.backend import GrpcEdgeBackend, RecipientKind
from postmesh.smtp_edge.session import recipient_verdict


@pytest.mark.parametrize(
    ("kind", "authenticated", "reply"),
    [
        (RecipientKind.LOCAL_USER, False, "250 2.1.5"),
        (RecipientKind.UNKNOWN_LOCAL, False, "550 5.1.1"),
        (RecipientKind.DISABLED, False, "550 5.2.1"),
        (RecipientKind.DISABLED, True, "550 5.2.1"),
        (RecipientKind.REMOTE, False, "554 5.7.1"),
        (RecipientKind.REMOTE, True, "250 2.1.5"),
    ],
)
def test_recipient_verdict(kind: RecipientKind, authenticated: bool, reply: str) -> None:
    assert recipient_verdict(kind, "a@example.test", authenticated)[0].startswith(reply)


class _Auth:
    """Answers ResolveRecipient as auth would for one address."""

    def __init__(self, response: auth_pb2.ResolveRecipientResponse) -> None:
        self.response = response

    async def ResolveRecipient(self, request: Any, timeout: float) -> Any:
        return self.response


def _backend(response: auth_pb2.ResolveRecipientResponse) -> GrpcEdgeBackend:
    return GrpcEdgeBackend(
        cast(auth_pb2_grpc.AuthServiceStub, _Auth(response)),
        cast(store_pb2_grpc.StoreServiceStub, None),
        5.0,
    )


async def test_owners_of_alias_disabled_and_catch_all() -> None:
    local = auth_pb2.RECIPIENT_KIND_LOCAL_USER
    alias = auth_pb2.ResolveRecipientResponse(
        kind=local, users=["a@example.test", "b@example.test"], remote_targets=["x@far.test"]
    )
    assert await _backend(alias).address_owners("team@example.test") == [
        "a@example.test",
        "b@example.test",
    ]
    # A catch-all delivers but owns nothing: its target may not send as any address.
    caught = auth_pb2.ResolveRecipientResponse(kind=local, users=["a@example.test"], catch_all=True)
    assert await _backend(caught).address_owners("anything@example.test") == []
    disabled = auth_pb2.ResolveRecipientResponse(kind=auth_pb2.RECIPIENT_KIND_DISABLED)
    b = _backend(disabled)
    assert await b.address_owners("a@example.test") == []
    assert await b.resolve_recipient("a@example.test") is RecipientKind.DISABLED
