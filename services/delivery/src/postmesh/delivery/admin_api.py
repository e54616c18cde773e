"""Queue admin REST API (FastAPI) behind the admin bearer token: deferred-queue entries (list,
inspect, retry now, delete with or without a bounce) and the per-message trace. The admin role
only: domain-admin tokens (auth's) get a 403 here (docs/adr/0026-admin-token-roles.md)."""

# No "from __future__ import annotations": FastAPI resolves the closures' annotations at runtime.

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from postmesh.api.events.v1 import events_pb2
from postmesh.api.store.v1 import queue_pb2
from postmesh.common.admin_token import domain_admin_token_id, same_token
from postmesh.delivery.queue_admin import QueueAdmin, QueueAdminError
from postmesh.delivery.trace import OUTCOME_NAMES, TraceIndex


def _when(ms: int) -> str | None:
    """Unix milliseconds as RFC 3339 UTC; None for 0 (not set)."""
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


class EntryOut(BaseModel):
    queue_id: str
    recipient: str
    sender: str
    attempts: int
    next_attempt_at: str | None
    last_error: str
    created_at: str | None
    # The replica attempting it now (empty when idle) and until when it holds the entry.
    lease_owner: str
    lease_expires_at: str | None
    notify: list[str]
    orcpt: str
    # When the sender was told of the delay (RFC 3464 Action: delayed); None: not (yet).
    delay_notified_at: str | None

    @classmethod
    def of(cls, e: queue_pb2.QueueEntry) -> "EntryOut":
        return cls(
            queue_id=e.queue_id, recipient=e.recipient.address, sender=e.message.mail_from,
            attempts=e.attempts, next_attempt_at=_when(e.next_attempt_at_ms),
            last_error=e.last_error, created_at=_when(e.created_at_ms),
            lease_owner=e.lease_owner, lease_expires_at=_when(e.lease_expires_at_ms),
            notify=list(e.recipient.notify), orcpt=e.recipient.orcpt,
            delay_notified_at=_when(e.delay_notified_at_ms),
        )  # fmt: skip


class QueueListOut(BaseModel):
    entries: list[EntryOut]
    next_page_token: str


class ActionOut(BaseModel):
    action: str
    entries: list[EntryOut]


class StepOut(BaseModel):
    at: str | None
    # accepted, queued, delivered, relayed, deferred, bounced
    step: str
    recipient: str
    attempt: int
    reply: str
    status: str
    remote_mta: str
    next_attempt_at: str | None


class TraceOut(BaseModel):
    queue_id: str
    sender: str
    received_at: str | None
    # Sent with REQUIRETLS (RFC 8689): relayed only over verified TLS to hosts offering it.
    requiretls: bool
    steps: list[StepOut]
    # Recipients still in the deferred queue.
    queued: list[EntryOut]


def _step(e: events_pb2.DeliveryEvent) -> StepOut:
    return StepOut(
        at=_when(e.at_ms), step=OUTCOME_NAMES.get(e.outcome, "unknown"), recipient=e.recipient,
        attempt=e.attempt, reply=" ".join(p for p in (e.reply_code, e.status, e.diagnostic) if p),
        status=e.status, remote_mta=e.remote_mta, next_attempt_at=_when(e.next_attempt_at_ms),
    )  # fmt: skip


def create_admin_app(admin: QueueAdmin, trace: TraceIndex, token: str) -> FastAPI:
    app = FastAPI(title="Postmesh queue admin API", version="1")
    bearer = HTTPBearer(auto_error=False)

    def require_token(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if creds is not None and same_token(creds.credentials, token):
            return
        if creds is not None and domain_admin_token_id(creds.credentials) is not None:
            # The queue holds every domain's mail: no domain admin's business. Delivery cannot
            # check such a token (auth keeps them) and needs not: it is refused either way.
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                "the delivery queue needs the admin role; domain-admin tokens have no access",
            )
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )

    auth = [Depends(require_token)]

    @contextlib.contextmanager
    def answers() -> Iterator[None]:
        try:
            yield
        except QueueAdminError as e:
            raise HTTPException(e.status, str(e)) from e

    @app.get("/api/v1/queue", dependencies=auth)
    async def list_queue(
        page_token: str = "", page_size: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> QueueListOut:
        with answers():
            entries, token_ = await admin.page("", page_token, page_size)
        return QueueListOut(entries=[EntryOut.of(e) for e in entries], next_page_token=token_)

    @app.get("/api/v1/queue/{queue_id}", dependencies=auth)
    async def inspect(queue_id: str) -> list[EntryOut]:
        with answers():
            return [EntryOut.of(e) for e in await admin.entries(queue_id)]

    @app.post("/api/v1/queue/{queue_id}/retry", status_code=202, dependencies=auth)
    async def retry_now(queue_id: str, recipient: str = "") -> ActionOut:
        """Attempt now (the attempt runs in the background; its outcome shows in the trace)."""
        with answers():
            entries = await admin.retry_now(queue_id, recipient)
        return ActionOut(action="retrying", entries=[EntryOut.of(e) for e in entries])

    @app.delete("/api/v1/queue/{queue_id}", dependencies=auth)
    async def delete(queue_id: str, recipient: str = "", bounce: bool = False) -> ActionOut:
        """Remove the entries; ``bounce=true`` first sends the sender a failure report."""
        with answers():
            entries = await admin.delete(queue_id, recipient, bounce)
        action = "bounced" if bounce else "deleted"
        return ActionOut(action=action, entries=[EntryOut.of(e) for e in entries])

    @app.get("/api/v1/trace/{queue_id}", dependencies=auth)
    async def trace_of(queue_id: str) -> TraceOut:
        events = trace.events(queue_id)
        queued: list[queue_pb2.QueueEntry] = []
        with contextlib.suppress(QueueAdminError):
            queued = await admin.entries(queue_id)
        if not events and not queued:
            raise HTTPException(404, f"nothing known about {queue_id}")
        first = events[0] if events else None
        received_ms = first.received_at_ms if first else queued[0].message.received_at_ms
        sender = first.mail_from if first else queued[0].message.mail_from
        requiretls = first.requiretls if first else queued[0].message.requiretls
        accepted = StepOut(
            at=_when(received_ms), step="accepted", recipient="", attempt=0, reply="",
            status="", remote_mta="", next_attempt_at=None,
        )  # fmt: skip
        steps = [accepted] + [_step(e) for e in events]
        return TraceOut(
            queue_id=queue_id, sender=sender, received_at=_when(received_ms),
            requiretls=requiretls, steps=steps, queued=[EntryOut.of(e) for e in queued],
        )  # fmt: skip

    return app


class EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside our event loop: the service owns signal handling, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
