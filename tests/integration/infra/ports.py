"""Free TCP (and UDP) ports on the loopback interface for the servers tests start.

A port is taken below the kernel's ephemeral range (``ip_local_port_range``), never from it:
``bind(port 0)`` hands out ephemeral ports, which every outgoing connection also draws its
source port from, so on a busy machine a port picked that way was sometimes taken by some
client's connection before the server bound it ("Failed to bind to address", seen in the
integration suite). Below the range only listeners compete, and each port is checked free when
it is picked and never handed out twice by this process. The small race with another process
binding the same port in between remains; random picks over ~20,000 ports make it rare.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Callable
from pathlib import Path

# Listening ports are picked from [LOWEST, start of the ephemeral range).
LOWEST = 10_000
_handed_out: set[int] = set()
_random = random.SystemRandom()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def bindable(host: str, port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(free: Callable[[int], bool]) -> int:
    """A port for which ``free(port)`` holds, below the ephemeral range, not handed out before
    by this process."""
    top = _ephemeral_start() - 1
    if top - LOWEST < 1000:
        raise RuntimeError(f"no room for test ports below the ephemeral range (starts {top + 1})")
    for _ in range(500):
        port = _random.randint(LOWEST, top)
        if port not in _handed_out and free(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port between {LOWEST} and {top}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the caller binds it soon)."""
    return pick_port(lambda p: bindable("127.0.0.1", p, socket.SOCK_STREAM))


def free_port_for(hosts: tuple[str, ...], *, udp: bool = False) -> int:
    """A TCP port free on every one of ``hosts``, and for UDP too with ``udp``."""

    def free(port: int) -> bool:
        kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp else (socket.SOCK_STREAM,)
        return all(bindable(h, port, k) for h in hosts for k in kinds)

    return pick_port(free)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
