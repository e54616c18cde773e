"""The ops HTTP server every service runs: /metrics (Prometheus), /healthz, /readyz."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from postmesh.common.logging import get_logger

ReadinessCheck = Callable[[], Awaitable[bool]]
log = get_logger(__name__)


class OpsServer:
    """Liveness is "the event loop answers"; readiness asks every registered check."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._checks: dict[str, ReadinessCheck] = {}
        self._runner: web.AppRunner | None = None

    def add_readiness_check(self, name: str, check: ReadinessCheck) -> None:
        self._checks[name] = check

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        failed = []
        for name, check in self._checks.items():
            try:
                ok = await check()
            except Exception:  # a failing check means "not ready", never a crash
                log.exception("readiness check failed", extra={"fields": {"check": name}})
                ok = False
            if not ok:
                failed.append(name)
        if failed:
            return web.Response(status=503, text="not ready: " + ", ".join(failed) + "\n")
        # The process answering, so a dev stack can tell its own service from another that
        # holds the port (devstack.Stack._wait_ready).
        return web.Response(text="ready\n", headers={"X-Postmesh-Pid": str(os.getpid())})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0 and site._server is not None:  # tests bind port 0
            sockets = getattr(site._server, "sockets", None) or []
            if sockets:
                self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
