"""The server side of ``Calls`` (ADR 0051): many unary calls of one service over one long-lived
bidirectional stream.

A message on an open HTTP/2 stream costs grpc.aio about half the CPU of a new unary call at
each end (no call object, no headers and trailers, no per-call deadline timer), which is most of
what a single-message IMAP FETCH or STORE costs. Each :class:`CallRequest` is handled by the
method's registered handler, the one a unary call gets: the same authorization check (with the
stream's verified peer) and call-time metric (``postmesh.common.grpc._Registrar``), the same
servicer code. Answers go back as they finish, in any order, matched by id.

Grouping (ADR 0072): a stream message may carry several calls (``CallRequest.more``), and
answers ready together go back in one message (``CallResponse.more``) to a caller that said it
reads them. A message costs grpc.aio the same at each end whatever it carries, so a busy caller
(delivery's Delivers) pays it once per group instead of once per call. Every answer says the
server reads grouped calls, so a caller groups only towards a server that does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, NoReturn

import grpc

from postmesh.api.store.v1 import store_pb2
from postmesh.common.logging import get_logger

log = get_logger(__name__)

# Calls of one stream handled at once; the stream's reading waits beyond (HTTP/2 flow control
# then holds the caller back), so one caller cannot make the server take on unbounded work.
MAX_IN_FLIGHT = 64

# A stream message carries further calls, or answers, only while it stays within this size
# (ADR 72): far below the channels' message limit (postmesh.common.grpc.MAX_MESSAGE_BYTES),
# however large the contents a group of answers or Delivers carries.
GROUP_BYTES = 1024 * 1024


class _CallContext:
    """What a unary handler uses of its ServicerContext, for one call carried by the stream:
    its status (``abort`` raises as grpc.aio's does) and the stream's peer and credentials."""

    def __init__(self, stream: grpc.aio.ServicerContext, auth: Any) -> None:
        self._stream = stream
        self._auth = auth
        self._code: grpc.StatusCode | None = None
        self._details = ""

    async def abort(self, code: grpc.StatusCode, details: str = "", *_: Any) -> NoReturn:
        self._code, self._details = code, details
        raise grpc.aio.AbortError()

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def auth_context(self) -> Any:
        return self._auth

    def peer(self) -> str:
        return str(self._stream.peer())

    def invocation_metadata(self) -> Any:
        return self._stream.invocation_metadata()

    def time_remaining(self) -> float | None:
        return None  # the caller keeps each call's deadline (the stream has none)

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False


async def _answer(
    handler: Any, req: store_pb2.CallRequest, ctx: _CallContext
) -> store_pb2.CallResponse:
    try:
        request = handler.request_deserializer(req.request)
        response = await handler.unary_unary(request, ctx)
        serialize = handler.response_serializer
        # None: the method answers bytes it serialized itself (the store's GetMessageMeta).
        data = response if serialize is None else serialize(response)
        return store_pb2.CallResponse(id=req.id, response=data)
    except grpc.aio.AbortError:
        code = ctx.code() or grpc.StatusCode.UNKNOWN
        return store_pb2.CallResponse(id=req.id, code=code.value[0], details=ctx.details())
    except Exception:
        code = ctx.code()
        if code is not None and code is not grpc.StatusCode.OK:
            # Set before raising, as the generated "not implemented" methods do.
            return store_pb2.CallResponse(id=req.id, code=code.value[0], details=ctx.details())
        # A unary call would end UNKNOWN too (grpc.aio logs the exception).
        log.exception("call carried by Calls crashed", extra={"fields": {"method": req.method}})
        return store_pb2.CallResponse(
            id=req.id, code=grpc.StatusCode.UNKNOWN.value[0], details="handler crashed"
        )


class OpenStreams:
    """The server's open Calls streams, so that a stopping server can end them: a stream never
    ends by itself, and the server's stop would otherwise wait its whole grace for them."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[Any]] = set()

    def end_all(self) -> None:
        """Each stream stops reading, sends the answers of the calls it has begun and ends;
        the callers make the calls it did not read as unary calls (to another replica)."""
        for q in self._queues:
            q.put_nowait(_END)


_END = object()


def calls_handler(unary: Mapping[str, Any], template: Any, streams: OpenStreams) -> Any:
    """The ``Calls`` stream handler of a service whose (wrapped) unary handlers by method name
    are ``unary``; ``template`` is the generated ``Calls`` handler (its (de)serializers)."""
    unimplemented = grpc.StatusCode.UNIMPLEMENTED.value[0]

    async def calls(
        requests: AsyncIterator[store_pb2.CallRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[store_pb2.CallResponse]:
        out: asyncio.Queue[Any] = asyncio.Queue()
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        auth = context.auth_context()  # the same for every call of the stream
        running: set[asyncio.Task[None]] = set()
        grouped_answers = asyncio.Event()  # the caller reads CallResponse.more

        async def one(handler: Any, req: store_pb2.CallRequest) -> None:
            try:
                out.put_nowait(await _answer(handler, req, _CallContext(context, auth)))
            finally:
                slots.release()

        async def start(req: store_pb2.CallRequest) -> None:
            handler = unary.get(req.method)
            if handler is None:
                details = f"Calls carries no method {req.method!r}"
                out.put_nowait(
                    store_pb2.CallResponse(id=req.id, code=unimplemented, details=details)
                )
                return
            await slots.acquire()
            task = asyncio.create_task(one(handler, req))
            running.add(task)
            task.add_done_callback(running.discard)

        async def read() -> None:
            try:
                async for message in requests:
                    if message.takes_grouped_answers:
                        grouped_answers.set()
                    await start(message)
                    for req in message.more:
                        await start(req)
                if running:
                    await asyncio.wait(list(running))
            finally:
                out.put_nowait(None)  # the caller half-closed (or went): end after the answers

        # An answer taken from ``out`` that did not fit in the last message: sent next.
        held: list[Any] = []

        def with_ready(first: store_pb2.CallResponse) -> store_pb2.CallResponse:
            """``first``, carrying the answers also ready, up to GROUP_BYTES, when the caller
            takes them grouped."""
            first.reads_grouped_calls = True
            if grouped_answers.is_set() and not out.empty():
                size = first.ByteSize()
                while not out.empty():
                    nxt = out.get_nowait()
                    if not isinstance(nxt, store_pb2.CallResponse):
                        out.put_nowait(nxt)  # the end: after these answers (the queue is ours)
                        break
                    size += nxt.ByteSize()
                    if size > GROUP_BYTES:
                        held.append(nxt)
                        break
                    first.more.append(nxt)
            return first

        async def next_answer() -> Any:
            return held.pop() if held else await out.get()

        reader = asyncio.create_task(read())
        streams._queues.add(out)
        try:
            while (resp := await next_answer()) is not None:
                if resp is _END:
                    reader.cancel()
                    if running:
                        await asyncio.wait(list(running))
                    while held or not out.empty():
                        if isinstance(left := await next_answer(), store_pb2.CallResponse):
                            yield with_ready(left)
                    return
                yield with_ready(resp)
        finally:
            streams._queues.discard(out)
            reader.cancel()
            for task in list(running):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    return grpc.stream_stream_rpc_method_handler(
        calls,
        request_deserializer=template.request_deserializer,
        response_serializer=template.response_serializer,
    )
