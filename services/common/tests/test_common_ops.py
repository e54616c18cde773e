from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
from pathlib import Path

from prometheus_client import Counter

from postmesh.common.config import ServiceSettings
from postmesh.common.ops import OpsServer, ReadinessCheck
from postmesh.common.service import Service, serve

PROBE = Counter("postmesh_test_probe_total", "A counter the ops test reads back.")


async def get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


async def test_health_ready_and_metrics() -> None:
    ready = True

    async def check() -> bool:
        return ready

    ops = OpsServer("127.0.0.1", 0)
    ops.add_readiness_check("backend", check)
    await ops.start()
    try:
        PROBE.inc()
        assert await get(ops.port, "/healthz") == (200, "ok\n")
        assert await get(ops.port, "/readyz") == (200, "ready\n")
        ready = False
        status, body = await get(ops.port, "/readyz")
        assert status == 503 and "backend" in body
        status, body = await get(ops.port, "/metrics")
        assert status == 200 and "postmesh_test_probe_total 1.0" in body
    finally:
        await ops.stop()


async def test_not_ready_until_the_service_has_started(tmp_path: Path) -> None:
    """A service whose dependencies already answer is still not ready while start() runs
    (its listeners may not be bound yet)."""
    release = asyncio.Event()

    class SlowStart(Service):
        async def start(self) -> None:
            await release.wait()

        async def stop(self) -> None:
            pass

        def readiness_checks(self) -> dict[str, ReadinessCheck]:
            async def dependency() -> bool:
                return True

            return {"dependency": dependency}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = ServiceSettings(ops_port=port, data_dir=tmp_path)
    task = asyncio.create_task(serve(SlowStart(), settings))
    try:
        for _ in range(100):
            try:
                status, body = await get(port, "/readyz")
                break
            except OSError:
                await asyncio.sleep(0.02)
        assert (status, body) == (503, "not ready: started\n")
        release.set()
        for _ in range(100):
            if (await get(port, "/readyz"))[0] == 200:
                break
            await asyncio.sleep(0.02)
        assert await get(port, "/readyz") == (200, "ready\n")
        # Started: what start-up made is out of the collector's sight (service.settle_heap).
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
