"""The embedded stack, as `make run` starts it, keeps store and auth off the network: their gRPC
is on Unix sockets closed to other users (ADR 0073), and every other test on this stack goes
through them."""

from __future__ import annotations

import asyncio
import socket
import stat
from pathlib import Path

from postmesh.common.devstack import Stack
from postmesh.common.grpc import channel, is_serving


def test_store_and_auth_listen_on_owner_only_unix_sockets(embedded_stack: Stack) -> None:
    stack = embedded_stack
    for server, port in (("store", stack.ports.store_grpc), ("auth", stack.ports.auth_grpc)):
        target = stack.grpc_target(server)
        assert target.startswith("unix:"), target
        path = Path(target.removeprefix("unix:"))
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        with socket.socket() as s:  # nothing on the TCP port a cluster would use
            assert s.connect_ex(("127.0.0.1", port)) != 0

        async def serving(t: str = target, name: str = server) -> bool:
            ch = channel(t, stack.grpc_security("imap-gw"), name)
            try:
                return await is_serving(ch)
            finally:
                await ch.close()

        assert asyncio.run(serving())
