"""Client limits over the wire: concurrent connections per client address (421 greeting past
it) and messages per minute per sender (450 4.7.1 at MAIL past it). The clients come through a
trusted PROXY header, so the edge sees a remote address; loopback clients are exempt."""

from __future__ import annotations

import asyncio
import smtplib
import socket
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY

from postmesh.smtp_edge.throttle import MessageRate

if TYPE_CHECKING:
    from conftest import EdgeFactory


def proxied(port: int, client_ip: str) -> tuple[smtplib.SMTP, tuple[int, bytes]]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"PROXY TCP4 {client_ip} 127.0.0.1 40000 25\r\n".encode())
    client = smtplib.SMTP(local_hostname="client.test", timeout=10)
    client.sock = sock
    client._host = "127.0.0.1"  # type: ignore[attr-defined]
    return client, client.getreply()


def rejected(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "postmesh_smtp_edge_messages_rejected_total", {"reason": reason}
    )
    return value or 0.0


async def test_connections_past_the_per_ip_limit_get_a_421_greeting(
    make_edge: EdgeFactory,
) -> None:
    edge = await make_edge(
        proxy_protocol=True, proxy_trusted_networks="127.0.0.0/8", smtp_max_connections_per_ip=2
    )
    before = rejected("too_many_connections")

    def run() -> tuple[list[int], tuple[int, bytes], bool]:
        open_ = [proxied(edge.mx, "198.51.100.7") for _ in range(2)]
        third, greeting = proxied(edge.mx, "198.51.100.7")
        try:
            third.getreply()
            closed = False
        except smtplib.SMTPServerDisconnected:  # the server hangs up after the 421
            closed = True
        other, other_greeting = proxied(edge.mx, "198.51.100.8")  # another client is fine
        codes = [g[0] for _, g in open_] + [other_greeting[0]]
        for c, _ in open_:
            assert c.noop()[0] == 250  # the first two go on
            c.quit()
        other.quit()
        return codes, greeting, closed

    codes, greeting, closed = await asyncio.to_thread(run)
    assert codes == [220, 220, 220]
    assert greeting == (421, b"4.7.0 mx.test Error: too many connections from 198.51.100.7")
    assert closed
    assert rejected("too_many_connections") == before + 1

    def after_they_left() -> int:
        client, greeting = proxied(edge.mx, "198.51.100.7")
        client.quit()
        return greeting[0]

    assert await asyncio.to_thread(after_they_left) == 220


async def test_messages_past_the_per_minute_rate_get_450_at_mail(make_edge: EdgeFactory) -> None:
    edge = await make_edge(
        proxy_protocol=True, proxy_trusted_networks="127.0.0.0/8", smtp_max_messages_per_minute=2
    )
    message = b"From: carol@example.net\r\nTo: alice@example.org\r\nSubject: x\r\n\r\nhi\r\n"

    def run() -> list[tuple[int, bytes]]:
        client, _ = proxied(edge.mx, "203.0.113.9")
        replies = []
        with client:
            client.ehlo("client.test")
            for _ in range(3):
                replies.append(client.mail("carol@example.net"))
                if replies[-1][0] == 250:
                    assert client.rcpt("alice@example.org")[0] == 250
                    assert client.data(message)[0] == 250
        return replies

    replies = await asyncio.to_thread(run)
    assert [r[0] for r in replies] == [250, 250, 450]
    assert replies[2][1] == b"4.7.1 Error: too much mail from 203.0.113.9, try again later"
    assert len(await edge.messages(2)) == 2


def test_message_rate_window_slides_and_forgets_old_keys() -> None:
    rate = MessageRate(2, max_keys=2)
    assert rate.allow("a", 0) and rate.allow("a", 1) and not rate.allow("a", 2)
    assert rate.allow("a", 60.5)  # the first one left the window
    assert rate.allow("b", 61) and rate.allow("c", 61)  # "a" is forgotten (two keys kept)
    assert rate.allow("a", 61) and rate.allow("a", 61)
    assert MessageRate(0).allow("x", 0)  # 0: no limit
