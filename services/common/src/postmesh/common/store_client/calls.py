"""The client side of StoreService.Calls (ADR 0051): unary store calls as messages on one
long-lived stream, which costs grpc.aio about half the CPU of a new call at each end.

:meth:`CallStream.call` answers as the unary call would (the response, or a
``grpc.aio.AioRpcError`` with the store's status), or raises :class:`NotCarried` when the stream
cannot tell: it failed or closed before the answer came (the store restarted, the connection
was aged out), or the store predates Calls. The caller then makes the unary call, with the
channel's retries: what a unary call that lost its connection would get from them.

A stream is used for new calls for at most ``lifetime`` seconds, then half-closed once its last
answer is in and replaced: the next one goes through the channel's load balancing again, so the
calls of a long-running gateway keep spreading over the store's replicas (ADR 37) and no stream
outlives the servers' connection age (``postmesh.common.grpc``).

Grouping (ADR 0072): while one caller writes a message on the stream, the calls that come
meanwhile wait and go together in the next message (``CallRequest.more``), once the server has
said it reads them; its answers may come grouped too (``CallResponse.more``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc
from google.protobuf.message import Message

from postmesh.api.store.v1 import store_pb2
from postmesh.common.grpc_calls import GROUP_BYTES
from postmesh.common.logging import get_logger

log = get_logger(__name__)

M = TypeVar("M", bound=Message)

_STATUS = {s.value[0]: s for s in grpc.StatusCode}
# After a stream fails, calls go unary for this long before another stream is tried.
RETRY_AFTER_SECONDS = 1.0


class NotCarried(Exception):
    """The call was not answered on the stream; make it as a unary call. ``sent``: it had been
    written, so the store may have done it (the stream failed before the answer)."""

    def __init__(self, why: str, *, sent: bool = False) -> None:
        super().__init__(why)
        self.sent = sent


class _Stream:
    def __init__(self, call: Any, opened: float) -> None:
        self.call = call
        self.opened = opened
        self.pending: dict[int, asyncio.Future[store_pb2.CallResponse]] = {}
        # One message write at a time on a call (gRPC core): a caller that finds one under way
        # queues in ``outbox`` (with a future set once it is written) for the next message.
        self.writing = False
        self.outbox: list[tuple[store_pb2.CallRequest, asyncio.Future[None]]] = []
        self.grouping = False  # the server reads CallRequest.more
        self.drainer: asyncio.Task[None] | None = None  # writes what queued (referenced)
        self.retired = False  # no new calls: closed once the pending ones are answered
        self.closed = False  # half-closed, or failed
        self.reader: asyncio.Task[None] | None = None

    async def close_if_done(self) -> None:
        if self.retired and not self.pending and not self.closed and not self.writing:
            self.closed = True
            with contextlib.suppress(
                grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError
            ):
                await self.call.done_writing()

    async def send(self, req: store_pb2.CallRequest) -> None:
        """``req`` written on the stream, alone or with others; NotCarried when it was not
        (the write failed or the stream closed first: then it was never sent). The caller
        that finds no write under way writes its own; what queued meanwhile is written by a
        task, so no caller waits on the writes of others."""
        if self.writing:
            sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.outbox.append((req, sent))
            await sent
            return
        self.writing = True
        try:
            await self._write([req])
        except BaseException as e:
            self._fail(self.outbox, f"write failed: {e!r}")
            self.writing = False
            raise
        if self.outbox and not self.closed:
            self.drainer = asyncio.get_running_loop().create_task(self._drain())
        else:
            await self._written()

    async def _drain(self) -> None:
        unsent: list[tuple[store_pb2.CallRequest, asyncio.Future[None]]] = []
        try:
            while self.outbox and not self.closed:
                unsent = [(r, f) for r, f in self.outbox if not f.done()]  # done: caller gone
                self.outbox.clear()
                while unsent:
                    group = self._group(unsent)
                    await self._write([r for r, _ in group])
                    del unsent[: len(group)]
                    for _, f in group:
                        if not f.done():
                            f.set_result(None)
        except Exception as e:  # the callers see it as NotCarried
            self._fail([*unsent, *self.outbox], f"write failed: {e!r}")
        except BaseException:
            self._fail([*unsent, *self.outbox], "write cancelled")
            raise
        finally:
            self.drainer = None
            await self._written()

    def _group(
        self, queued: list[tuple[store_pb2.CallRequest, asyncio.Future[None]]]
    ) -> list[tuple[store_pb2.CallRequest, asyncio.Future[None]]]:
        """The first of ``queued`` and, when the server reads grouped calls, those after it
        that keep the message within GROUP_BYTES."""
        size = queued[0][0].ByteSize()
        n = 1
        while self.grouping and n < len(queued):
            size += queued[n][0].ByteSize()
            if size > GROUP_BYTES:
                break
            n += 1
        return queued[:n]

    async def _written(self) -> None:
        self.writing = False
        self._fail(self.outbox, "stream closed")  # what queued after it closed
        if self.retired and not self.pending:
            await self.close_if_done()

    def _fail(
        self, queued: list[tuple[store_pb2.CallRequest, asyncio.Future[None]]], why: str
    ) -> None:
        for _, f in queued:
            if not f.done():
                f.set_exception(NotCarried(why))
        self.outbox.clear()

    async def _write(self, reqs: list[store_pb2.CallRequest]) -> None:
        message = reqs[0]
        if len(reqs) > 1:
            message = store_pb2.CallRequest()
            message.CopyFrom(reqs[0])
            message.more.extend(reqs[1:])
        try:
            await self.call.write(message)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as e:
            # Never sent: nothing was done. The reader sees why the stream ended.
            raise NotCarried(f"write failed: {e}") from None


class CallStream:
    """Unary calls of StoreService carried by ``open_stream()`` (the stub's ``Calls``)."""

    def __init__(self, open_stream: Callable[[], Any], lifetime: float = 30.0) -> None:
        self._open = open_stream
        self._lifetime = lifetime
        self._stream: _Stream | None = None
        self._ids = itertools.count(1)
        self._unavailable_until = 0.0
        self._closing: set[asyncio.Task[None]] = set()  # referenced until they finish
        self.supported = True  # until the store answers UNIMPLEMENTED to Calls itself

    def _current(self) -> _Stream:
        now = time.monotonic()
        s = self._stream
        if s is not None and not s.closed and now - s.opened < self._lifetime:
            return s
        if s is not None:
            s.retired = True
            self._close_when_done(s)
        if now < self._unavailable_until:
            raise NotCarried("the last stream failed moments ago")
        s = _Stream(self._open(), now)
        s.reader = asyncio.get_running_loop().create_task(self._read(s))
        self._stream = s
        return s

    def _close_when_done(self, s: _Stream) -> None:
        if s.retired and not s.pending and not s.closed:
            task = asyncio.get_running_loop().create_task(s.close_if_done())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _read(self, s: _Stream) -> None:
        err: BaseException | None = None
        try:
            async for message in s.call:
                if message.reads_grouped_calls:
                    s.grouping = True
                for resp in (message, *message.more):
                    fut = s.pending.pop(resp.id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(resp)
                if s.retired:
                    await s.close_if_done()
        except grpc.aio.AioRpcError as e:
            err = e
            if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                self.supported = False  # a store from before Calls (rolling upgrade)
            elif not s.retired or s.pending:
                log.info("store call stream ended", extra={"fields": {"code": e.code().name}})
                self._unavailable_until = time.monotonic() + RETRY_AFTER_SECONDS
        except asyncio.CancelledError:
            err = NotCarried("stream closed")
            raise
        finally:
            s.closed = True
            if self._stream is s:
                self._stream = None
            for fut in s.pending.values():
                if not fut.done():
                    fut.set_exception(NotCarried(f"stream ended: {err or 'closed'}", sent=True))
            s.pending.clear()

    async def call(
        self, method: str, request: Message, response_type: type[M], timeout: float
    ) -> M:
        """The answer to ``method``; AioRpcError with the store's status when it refuses, or
        DEADLINE_EXCEEDED after ``timeout`` seconds. NotCarried: make the unary call."""
        if not self.supported:
            raise NotCarried("the store has no Calls")
        s = self._current()
        call_id = next(self._ids)
        fut: asyncio.Future[store_pb2.CallResponse] = asyncio.get_running_loop().create_future()
        s.pending[call_id] = fut
        req = store_pb2.CallRequest(
            id=call_id,
            method=method,
            request=request.SerializeToString(),
            takes_grouped_answers=True,
        )
        try:
            async with asyncio.timeout(timeout):
                await s.send(req)
                resp = await fut
        except TimeoutError:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                details=f"{method} on the Calls stream",
            ) from None
        finally:
            s.pending.pop(call_id, None)
            if not fut.done():
                fut.cancel()
            self._close_when_done(s)
        if resp.code:
            raise grpc.aio.AioRpcError(
                _STATUS.get(resp.code, grpc.StatusCode.UNKNOWN),
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                details=resp.details,
            )
        return response_type.FromString(resp.response)

    async def close(self) -> None:
        s, self._stream = self._stream, None
        if s is not None:
            s.call.cancel()
            if s.reader is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await s.reader


async def carried_or_unary(
    calls: CallStream | None,
    unary: Callable[..., Awaitable[Any]],
    method: str,
    request: Message,
    response_type: type[M],
    timeout: float,
    *,
    idempotent: bool = True,
) -> M:
    """``method`` on ``calls`` when there is one and it answers, else ``unary`` (the stub's
    method, with the channel's retries). Raises grpc.aio.AioRpcError as the unary call does;
    NotCarried, with ``sent``, when a call that is not ``idempotent`` was sent on a stream that
    then failed (the store may have done it: it is not made again)."""
    if calls is not None:
        try:
            return await calls.call(method, request, response_type, timeout)
        except NotCarried as e:
            if e.sent and not idempotent:
                raise
    return cast(M, await unary(request, timeout=timeout))
