"""A TCP relay from one address to another, in a thread of its own, for tests.

The container smoke test uses it to let pods on a podman bridge network reach Kafka and FerretDB,
which listen on 127.0.0.1 only: the relay listens on the bridge's gateway address (reachable from
the host and its containers only) and forwards each connection to the loopback server.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from types import TracebackType

# Linux IP_FREEBIND: bind an address not (yet) on an interface. A CNI bridge and its gateway
# address appear only when the network's first container starts, after the relay must listen.
_IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)


class TcpRelay:
    """``with TcpRelay(("10.89.0.1", 0), ("127.0.0.1", 9092)) as relay: relay.port``"""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self._listen = listen
        self._target = target
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    def start(self) -> TcpRelay:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
        sock.bind(self._listen)
        self.port = sock.getsockname()[1]
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, sock=sock), self._loop
        ).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> TcpRelay:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()
