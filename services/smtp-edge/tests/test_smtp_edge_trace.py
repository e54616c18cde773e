"""Trace facts over the wire: the configured host name, the verified reverse name in Received:,
and the queue id given at MAIL in the 250 reply and on every log line about the message."""

from __future__ import annotations

import asyncio
import json
import logging
import smtplib
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from pydantic import ValidationError

from postmesh.common.logging import JsonFormatter
from postmesh.common.mailauth.fakedns import FakeResolver
from postmesh.common.mailauth.iprev import check_iprev
from postmesh.smtp_edge.settings import SmtpEdgeSettings

if TYPE_CHECKING:
    from conftest import EdgeFactory

MESSAGE = b"From: carol@example.net\r\nTo: alice@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.events: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(json.loads(self.format(record)))


@pytest.fixture
def log_lines() -> Iterator[_Lines]:
    handler = _Lines()
    logger = logging.getLogger("postmesh.smtp_edge")
    old = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


async def test_hostname_in_greeting_ehlo_and_received(make_edge: EdgeFactory) -> None:
    edge = await make_edge(hostname="MX1.Example.ORG.")

    def run() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", edge.mx, timeout=10) as s:
            ehlo = s.ehlo("client.test")
            s.mail("carol@example.net")
            s.rcpt("alice@example.org")
            return ehlo, s.data(MESSAGE)

    def banner() -> bytes:
        with smtplib.SMTP(timeout=10) as s:
            _, msg = s.connect("127.0.0.1", edge.mx)
            return msg

    assert (await asyncio.to_thread(banner)).startswith(b"mx1.example.org ESMTP")
    ehlo, data = await asyncio.to_thread(run)
    assert ehlo[1].split(b"\n")[0] == b"mx1.example.org"
    [msg] = await edge.messages(1)
    assert f"by mx1.example.org (Postmesh) with ESMTP id {msg.queue_id}".encode() in (
        msg.inline_content
    )
    assert data == (250, f"2.0.0 Ok: queued as {msg.queue_id}".encode())


def test_hostname_must_be_a_host_name() -> None:
    with pytest.raises(ValidationError, match="hostname"):
        SmtpEdgeSettings(hostname="mx example.org")
    with pytest.raises(ValidationError, match="hostname"):
        SmtpEdgeSettings(hostname="-bad-.example.org")
    with pytest.raises(ValidationError, match="dns_servers"):
        SmtpEdgeSettings(dns_servers="resolver.example:53")


async def test_received_names_the_forward_confirmed_reverse_name(make_edge: EdgeFactory) -> None:
    dns = FakeResolver()
    dns.add("10.2.0.192.in-addr.arpa", "PTR", ["Mail.Client.Example"])
    dns.add("mail.client.example", "A", ["192.0.2.10"])
    edge = await make_edge(proxy_protocol=True, proxy_trusted_networks="127.0.0.0/8", dns=dns)

    def run() -> tuple[int, bytes]:
        # Behind a load balancer the PROXY header names the client (192.0.2.10).
        sock = socket.create_connection(("127.0.0.1", edge.mx), timeout=10)
        sock.sendall(b"PROXY TCP4 192.0.2.10 127.0.0.1 40000 25\r\n")
        client = smtplib.SMTP(timeout=10)
        client.sock = sock
        client.getreply()
        with client:
            client.ehlo("client.test")
            client.mail("carol@example.net")
            client.rcpt("alice@example.org")
            return client.data(MESSAGE)

    assert (await asyncio.to_thread(run))[0] == 250
    [msg] = await edge.messages(1)
    assert msg.inline_content.startswith(
        b"Received: from client.test (mail.client.example [192.0.2.10])\r\n"
    )


async def test_iprev_results() -> None:
    dns = FakeResolver()
    dns.add("1.2.0.192.in-addr.arpa", "PTR", ["liar.example", "good.example"])
    dns.add("liar.example", "A", ["198.51.100.1"])
    dns.add("good.example", "A", ["192.0.2.1"])
    dns.add("2.2.0.192.in-addr.arpa", "PTR", ["liar.example"])
    dns.add("3.2.0.192.in-addr.arpa", "PTR", ["slow.example"])
    dns.temperror.add("slow.example")
    assert (await check_iprev(dns, "192.0.2.1")).name == "good.example"
    assert (await check_iprev(dns, "192.0.2.2")).result == "fail"
    assert (await check_iprev(dns, "192.0.2.3")).result == "temperror"
    assert (await check_iprev(dns, "192.0.2.4")).result == "permerror"  # no PTR at all
    assert (await check_iprev(dns, "::1")).name == "localhost"


async def test_queue_id_on_every_log_line_of_the_transaction(
    make_edge: EdgeFactory, log_lines: _Lines
) -> None:
    edge = await make_edge()

    def run() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", edge.mx, timeout=10) as s:
            s.ehlo("client.test")
            s.mail("carol@example.net")
            s.rcpt("nobody@example.org")  # rejected: logged with the queue id
            s.rcpt("alice@example.org")
            reply = s.data(MESSAGE)
            s.noop()
            return reply

    code, text = await asyncio.to_thread(run)
    assert code == 250
    queue_id = text.decode().rsplit(" ", 1)[1]
    msgs = [e["msg"] for e in log_lines.events if e.get("queue_id") == queue_id]
    assert msgs[:4] == ["mail from", "rejected", "authentication results", "message queued"]
    # Lines after the transaction (disconnect) no longer carry it.
    after = [e for e in log_lines.events if e["msg"] == "disconnect"]
    assert after and "queue_id" not in after[0]
