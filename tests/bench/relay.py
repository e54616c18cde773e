"""``make bench`` part ``relay``: remote relay throughput into a Postfix smtp-sink, Postmesh
side by side with Postfix relaying the same load to the same kind of sink in the same run.

Postmesh: submission (smtplib, N sessions) -> bus -> delivery -> deferred queue -> MX from a
real dnsmasq -> smtp-sink. Postfix: the same messages into a Postfix of its own
(``relayhost = [sink]``) -> smtp-sink. Each run ends when its sink has taken every message
(``smtp-sink -M``); the figure is messages/s from the first submission to that moment.
"""

from __future__ import annotations

import smtplib
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from postmesh.common.devstack import Stack
from tests.integration.infra.dnsmasq import Dnsmasq, Zone
from tests.integration.infra.postfix_peer import PostfixPeer, SmtpSink, free_port_on
from tests.integration.stack import embedded_env, free_stack_ports, test_env

PASSWORD = "bench-password"
SINK = "127.0.0.3"


def message(i: int, size: int, sender: str) -> bytes:
    head = f"From: {sender}\r\nTo: r@sink.test\r\nSubject: relay bench {i}\r\n\r\n"
    line = ("x" * 76 + "\r\n").encode()
    return head.encode() + line * max(1, (size - len(head)) // len(line))


def submit(host: str, port: int, login: str | None, count: int, size: int, rcpt: str) -> None:
    with smtplib.SMTP(host, port, timeout=120) as s:
        if login:
            s.login(login, PASSWORD)  # loopback: plaintext AUTH is allowed (ADR 4)
        sender = login or "bench@example.test"
        for i in range(count):
            # Submission checks that the From: address is the logged-in user's.
            s.sendmail(sender, [rcpt], message(i, size, sender))


def timed(sink: SmtpSink, sessions: int, per: int, send: object) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(sessions) as pool:
        list(pool.map(send, range(sessions)))  # type: ignore[arg-type]
    if not sink.wait_done(900):
        raise RuntimeError("the sink did not get every message within 900 s")
    return time.perf_counter() - start


def run(messages: int, size: int, sessions: int) -> tuple[float, float]:
    per = messages // sessions
    total = per * sessions
    port = free_port_on("127.0.0.1", SINK)
    zone = Zone(mx=[("sink.test", "mx.sink.test", 10)], a=[("mx.sink.test", SINK)])
    with Dnsmasq(zone) as dns, tempfile.TemporaryDirectory(prefix="postmesh-bench-") as tmp:
        env = {
            **test_env(), **embedded_env(), "POSTMESH_LOG_LEVEL": "WARNING",
            "POSTMESH_DNS_SERVERS": dns.servers, "POSTMESH_SMTP_PORT": str(port),
            "POSTMESH_DKIM_SIGNING": "false",
        }  # fmt: skip
        stack = Stack(Path(tmp), free_stack_ports(), env)
        stack.start(timeout=90)
        try:
            user = "bench-relay@example.test"
            stack.ensure_user(user, PASSWORD)
            with SmtpSink(SINK, port, max_messages=total) as sink:
                ours = timed(
                    sink, sessions, per,
                    lambda _: submit("127.0.0.1", stack.ports.smtp_submission, user, per, size,
                                     "r@sink.test"),
                )  # fmt: skip
        finally:
            stack.stop()
    relay_port = free_port_on("127.0.0.1", SINK)
    with (
        PostfixPeer(relay_port, [], hostname="relay.bench.test", relayhost=f"[{SINK}]:{port}"),
        SmtpSink(SINK, port, max_messages=total) as sink,
    ):
        theirs = timed(
            sink, sessions, per,
            lambda _: submit("127.0.0.1", relay_port, None, per, size, "r@sink.test"),
        )  # fmt: skip
    return total / ours, total / theirs


def main(messages: int, sessions: int, sizes: list[int]) -> None:
    for size in sizes:
        ours, theirs = run(messages, size, sessions)
        print(
            f"\n== relay into smtp-sink, {messages} messages of {size // 1024} KiB, "
            f"{sessions} sessions\n"
            f"postmesh relay   {ours:8.1f} msg/s\n"
            f"postfix relay    {theirs:8.1f} msg/s\n"
            f"ratio            {ours / theirs:8.2f}x postfix"
        )
