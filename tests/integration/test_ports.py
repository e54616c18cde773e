"""The ports the fixtures start servers on come from below the kernel's ephemeral range, where
no client connection's source port can take them first (infra/ports.py)."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.integration.infra import ports
from tests.integration.infra.dnsmasq import free_udp_tcp_port
from tests.integration.infra.ports import LOWEST, free_port
from tests.integration.infra.postfix_peer import free_port_on


def test_ports_are_free_distinct_and_below_the_ephemeral_range() -> None:
    start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(40)] + [free_udp_tcp_port(), free_port_on("127.0.0.1")]
    assert len(set(ports)) == len(ports)
    assert all(LOWEST <= p < start for p in ports)
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


def test_a_port_in_use_is_never_handed_out() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", free_port()))
        held.listen()
        taken = held.getsockname()[1]
        # The check every pick runs: a port a real socket holds is refused ...
        assert not ports.bindable("127.0.0.1", taken, socket.SOCK_STREAM)
        # ... and a refused pick is skipped for the next candidate.
        asked: list[int] = []

        def free_from_the_fourth(port: int) -> bool:
            asked.append(port)
            return len(asked) > 3

        got = ports.pick_port(free_from_the_fourth)
        assert got == asked[-1] and len(asked) == 4
