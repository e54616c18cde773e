"""``make bench`` part ``relay``: remote relay throughput into a Postfix smtp-sink, Postmesh
side by side with Postfix relaying the same load to the same kind of sink in the same run.

Postmesh: submission (smtplib, N sessions) -> bus -> delivery -> deferred queue -> MX from a
real dnsmasq -> smtp-sink. Postfix: the same messages into a Postfix of its own
(``relayhost = [sink]``) -> smtp-sink. Each run ends when its sink has taken every message
(``smtp-sink -M``); the figures are messages/s to that moment from the first connection, and
from the moment every session was open and logged in (the relay load alone). Both stay up
for several rounds, each round running the two one after the other (which goes first
alternates), and each round's ratio and their median are printed.
"""

from __future__ import annotations

import smtplib
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from threading import Barrier

from postmesh.common.devstack import Stack
from tests.bench.stats import ratios, side_by_side
from tests.integration.infra.dnsmasq import Dnsmasq, Zone
from tests.integration.infra.postfix_peer import PostfixPeer, SmtpSink, free_port_on
from tests.integration.stack import embedded_env, free_stack_ports, quick_env

PASSWORD = "bench-password"
SINK = "127.0.0.3"


def message(i: int, size: int, sender: str) -> bytes:
    head = f"From: {sender}\r\nTo: r@sink.test\r\nSubject: relay bench {i}\r\n\r\n"
    line = ("x" * 76 + "\r\n").encode()
    return head.encode() + line * max(1, (size - len(head)) // len(line))


def submit(
    host: str, port: int, login: str | None, count: int, size: int, rcpt: str, ready: Barrier
) -> None:
    with smtplib.SMTP(host, port, timeout=120) as s:
        if login:
            s.login(login, PASSWORD)  # loopback: plaintext AUTH is allowed (ADR 4)
        sender = login or "bench@example.test"
        ready.wait(120)  # every session is open (and logged in): the relay load starts now
        for i in range(count):
            # Submission checks that the From: address is the logged-in user's.
            s.sendmail(sender, [rcpt], message(i, size, sender))


@dataclass
class Timing:
    """Seconds until the sink took every message: from the first connection (session set-up,
    AUTH included), and from the moment every session was ready to send its first MAIL."""

    from_connect: float
    from_ready: float


def timed(sink: SmtpSink, sessions: int, send: Callable[[Barrier], None]) -> Timing:
    start = time.perf_counter()
    ready_at: list[float] = []
    ready = Barrier(sessions, action=lambda: ready_at.append(time.perf_counter()))
    with ThreadPoolExecutor(sessions) as pool:
        list(pool.map(lambda _: send(ready), range(sessions)))
    if not sink.wait_done(900):
        raise RuntimeError("the sink did not get every message within 900 s")
    end = time.perf_counter()
    return Timing(end - start, end - ready_at[0])


def run(
    messages: int, size: int, sessions: int, rounds: int
) -> tuple[list[Timing], list[Timing], int]:
    """``rounds`` pairs of runs, Postmesh and Postfix both up throughout, each round's first
    side alternating (round 1: Postmesh first)."""
    per = messages // sessions
    total = per * sessions
    port = free_port_on("127.0.0.1", SINK)
    zone = Zone(mx=[("sink.test", "mx.sink.test", 10)], a=[("mx.sink.test", SINK)])
    # A real zone's TTL (dnsmasq's default is 0), so delivery's resolver may cache the MX and
    # its address as it would in production; Postfix here relays to [sink] without DNS at all.
    with (
        Dnsmasq(zone, ttl=300) as dns,
        tempfile.TemporaryDirectory(prefix="postmesh-bench-") as tmp,
    ):
        env = {
            **quick_env(), **embedded_env(), "POSTMESH_LOG_LEVEL": "WARNING",
            "POSTMESH_DNS_SERVERS": dns.servers, "POSTMESH_SMTP_PORT": str(port),
            "POSTMESH_DKIM_SIGNING": "false",
        }  # fmt: skip
        stack = Stack(Path(tmp), free_stack_ports(), env)
        stack.start(timeout=90)
        relay_port = free_port_on("127.0.0.1", SINK)
        try:
            user = "bench-relay@example.test"
            stack.ensure_user(user, PASSWORD)
            with PostfixPeer(
                relay_port, [], hostname="relay.bench.test", relayhost=f"[{SINK}]:{port}"
            ):

                def ours() -> Timing:
                    with SmtpSink(SINK, port, max_messages=total) as sink:
                        return timed(
                            sink, sessions,
                            lambda ready: submit("127.0.0.1", stack.ports.smtp_submission,
                                                 user, per, size, "r@sink.test", ready),
                        )  # fmt: skip

                def theirs() -> Timing:
                    with SmtpSink(SINK, port, max_messages=total) as sink:
                        return timed(
                            sink, sessions,
                            lambda ready: submit("127.0.0.1", relay_port, None, per, size,
                                                 "r@sink.test", ready),
                        )  # fmt: skip

                mine: list[Timing] = []
                postfix: list[Timing] = []
                for r in range(rounds):
                    a, b = side_by_side(r, ours, theirs)
                    mine.append(a)
                    postfix.append(b)
        finally:
            stack.stop()
    return mine, postfix, total


def main(messages: int, sessions: int, sizes: list[int], rounds: int = 3) -> None:
    for size in sizes:
        ours, theirs, total = run(messages, size, sessions, rounds)
        pairs = list(zip(ours, theirs, strict=True))
        connect = [(total / a.from_connect, total / b.from_connect) for a, b in pairs]
        ready = [(total / a.from_ready, total / b.from_ready) for a, b in pairs]
        # Postmesh's submission sessions log in (argon2id, ADR 4) and Postfix's do not: the
        # first figure counts that once-per-session cost, the second is the relay load alone.
        print(
            f"\n== relay into smtp-sink, {total} messages of {size // 1024} KiB, "
            f"{sessions} sessions, {rounds} rounds (msg/s per round: postmesh / postfix)"
        )
        for name, rates in (("from connect", connect), ("from sessions ready", ready)):
            rows = "  ".join(f"{a:.1f} / {b:.1f}" for a, b in rates)
            print(f"{name:<20} {rows}\n{'':<20} ratio {ratios(rates)} postfix")
