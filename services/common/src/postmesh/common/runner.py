"""Run a service until SIGTERM/SIGINT, then stop it cleanly."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from postmesh.common.logging import get_logger

log = get_logger(__name__)


async def wait_for_stop_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stop signal received, shutting down")


def run(main: Callable[[], Awaitable[None]]) -> None:
    """``asyncio.run`` the service's main; it returns after :func:`wait_for_stop_signal`."""
    try:
        asyncio.run(main())  # type: ignore[arg-type]
    except KeyboardInterrupt:
        pass
