from __future__ import annotations

import asyncio

from prometheus_client import Counter

from postmesh.common.ops import OpsServer

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
