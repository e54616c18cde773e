"""The lifecycle every service shares: logs, ops server, start, wait for SIGTERM, stop."""

from __future__ import annotations

import asyncio
import gc
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TypeVar

from postmesh.common.config import ServiceSettings, load_settings
from postmesh.common.logging import configure_logging, get_logger
from postmesh.common.malloc_tuning import keep_large_buffers
from postmesh.common.ops import OpsServer, ReadinessCheck
from postmesh.common.runner import wait_for_stop_signal
from postmesh.common.tls import certificate_reloading

log = get_logger(__name__)
S = TypeVar("S", bound=ServiceSettings)


class StartupError(RuntimeError):
    """A dependency refused the service at start (a broker rejecting its credentials, say).
    ``main`` logs the message, which names the dependency and the settings to check, and exits
    with status 1 instead of a traceback."""


class Service(ABC):
    """A service: ``start`` opens its listeners and background tasks, ``stop`` closes them."""

    name: str = "service"

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        return {}


def settle_heap() -> None:
    """Move what start-up made (modules, gRPC and protobuf machinery, settings: ~75,000
    objects) out of the garbage collector's sight. Each full collection walked them all: 40-150
    ms pauses of a service's one event loop, measured under load, every few thousand calls
    (ADR 0039). They live as long as the process, so they lose nothing by not being scanned;
    what start-up left as garbage is collected first."""
    gc.collect()
    gc.freeze()


async def serve(service: Service, settings: ServiceSettings) -> None:
    """Run ``service`` until SIGTERM/SIGINT. Call it inside the running loop: grpc.aio channels
    and servers bind to the loop they are created on."""
    ops = OpsServer(settings.ops_host, settings.ops_port)
    started = False

    async def listening() -> bool:
        # Not ready before start() returns: its dependencies may answer while its own
        # listeners are not yet bound (a Kafka consumer starting first, say), and a Service
        # routing traffic on /readyz would send clients to a closed port.
        return started

    ops.add_readiness_check("started", listening)
    for name, check in service.readiness_checks().items():
        ops.add_readiness_check(name, check)
    await ops.start()
    try:
        await service.start()
        settle_heap()
        started = True
        log.info("service started", extra={"fields": {"ops_port": ops.port}})
        async with certificate_reloading(settings.tls_reload_seconds):
            await wait_for_stop_signal()
    finally:
        await service.stop()
        await ops.stop()
        log.info("service stopped")


def main(settings_cls: type[S], factory: Callable[[S], Service], name: str) -> None:
    """Entry point of ``python -m postmesh.<service>``."""
    # Before the service allocates its buffers: no page faults for each 1 MiB one (ADR 0057).
    keep_large_buffers()
    settings = load_settings(settings_cls)
    configure_logging(name, settings.log_level)

    async def run() -> None:
        # The factory runs inside the loop, so what it creates (gRPC channels) binds to it.
        await serve(factory(settings), settings)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except StartupError as exc:
        log.error("service could not start: %s", exc)
        raise SystemExit(1) from None
