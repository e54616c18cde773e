"""``make bench`` part ``smtp``: the MX driven by Postfix's smtp-source, side by side with a
Postfix of the bench's own (tests/integration/infra/postfix_peer.py: durable queue, delivering
into a Maildir) taking the same load, in one run (issue 9 item 8).

For 1 and 20 sessions, 4 KiB and 100 KiB: acceptance (smtp-source's run, each message
answered 250 only once durable: for Postmesh after the bus acknowledged it) and accepted to
visible (Postmesh: counted by IMAP STATUS (MESSAGES), as a client polls a folder; Postfix:
files in the Maildir), both from the first connection, in messages/s, with the Postmesh/Postfix
ratio; each case runs in several rounds, the two servers one after the other (which goes first
alternates), with each round's ratio and their median. The MX checks SPF/DKIM/DMARC as in
production, against a dnsmasq on loopback. Every loop is bounded; traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from postmesh.common.devstack import Stack
from tests.bench.stacks import inbox_count
from tests.bench.stats import ratios, side_by_side
from tests.integration.infra.dnsmasq import Dnsmasq, Zone
from tests.integration.infra.postfix_peer import PostfixPeer, free_port_on
from tests.integration.stack import embedded_env, free_stack_ports, quick_env

USER = "bench-mx@example.test"
PASSWORD = "bench-password"
SENDER = "sender@client.bench.test"
CASES = [(1, 4096), (20, 4096), (1, 102400), (20, 102400)]
VISIBLE_TIMEOUT_S = 900.0


def smtp_source(port: int, sessions: int, messages: int, size: int, rcpt: str) -> float:
    """Seconds for smtp-source to have every message accepted (-d: sessions stay connected
    between messages, as an MTA's connection cache does)."""
    cmd = [
        "smtp-source", "-d", "-s", str(sessions), "-m", str(messages), "-l", str(size),
        "-f", SENDER, "-t", rcpt, "-M", "client.bench.test", f"127.0.0.1:{port}",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=VISIBLE_TIMEOUT_S)
    if done.returncode != 0 or "fatal" in done.stderr:
        raise RuntimeError(f"smtp-source failed: {done.stderr.strip()}")
    return time.perf_counter() - start


def wait_until(count: Callable[[], int], target: int, start: float) -> float:
    deadline = time.monotonic() + VISIBLE_TIMEOUT_S
    while count() < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {count()} of {target} visible after {VISIBLE_TIMEOUT_S} s")
        time.sleep(0.05)
    return time.perf_counter() - start


def imap_count(stack: Stack) -> int:
    return inbox_count(stack.ports.imap, USER, PASSWORD)


def maildir_count(postfix: PostfixPeer) -> int:
    return sum(1 for d in ("new", "cur") for _ in (postfix.maildir / d).glob("*"))


def run_case(
    count: Callable[[], int], port: int, rcpt: str, sessions: int, messages: int, size: int
) -> tuple[float, float]:
    """(accepted msg/s, accepted-to-visible msg/s) for one server and one case."""
    before = count()
    start = time.perf_counter()
    accept = smtp_source(port, sessions, messages, size, rcpt)
    visible = wait_until(count, before + messages, start)
    return messages / accept, messages / visible


def main(messages: int, rounds: int = 3) -> None:
    zone = Zone(zones=["test"])
    with Dnsmasq(zone) as dns, tempfile.TemporaryDirectory(prefix="postmesh-bench-") as tmp:
        env = {
            **quick_env(), **embedded_env(), "POSTMESH_LOG_LEVEL": "WARNING",
            "POSTMESH_DNS_SERVERS": dns.servers, "POSTMESH_HOSTNAME": "mx.example.test",
        }  # fmt: skip
        stack = Stack(Path(tmp), free_stack_ports(), env)
        stack.start(timeout=90)
        postfix_port = free_port_on("127.0.0.1")
        try:
            stack.ensure_user(USER, PASSWORD)
            with PostfixPeer(postfix_port, ["bench.test"], hostname="mx.postfix.bench.test") as pf:
                print(
                    f"\n== SMTP MX, smtp-source, {messages} messages a case "
                    "(msg/s from the first connection)"
                )
                print(
                    f"{'case':<22}{'postmesh accept':>16}{'postfix accept':>16}{'ratio':>8}"
                    f"{'postmesh visible':>18}{'postfix visible':>17}{'ratio':>8}"
                )
                for sessions, size in CASES:
                    pairs: list[tuple[tuple[float, float], tuple[float, float]]] = []
                    ours = functools.partial(
                        run_case, lambda: imap_count(stack), stack.ports.smtp_mx, USER,
                        sessions, messages, size,
                    )  # fmt: skip
                    theirs = functools.partial(
                        run_case, lambda: maildir_count(pf), postfix_port, "r@bench.test",
                        sessions, messages, size,
                    )  # fmt: skip
                    for r in range(rounds):
                        a, b = side_by_side(r, ours, theirs)
                        pairs.append((a, b))
                        name = f"{sessions} x {size // 1024} KiB" + (f" #{r + 1}" if r else "")
                        print(
                            f"{name:<22}{a[0]:>16.1f}{b[0]:>16.1f}"
                            f"{a[0] / b[0]:>7.2f}x{a[1]:>18.1f}{b[1]:>17.1f}"
                            f"{a[1] / b[1]:>7.2f}x"
                        )
                    accepts = [(a[0], b[0]) for a, b in pairs]
                    visibles = [(a[1], b[1]) for a, b in pairs]
                    print(f"{'':<22}accept {ratios(accepts)}; visible {ratios(visibles)}")
        finally:
            stack.stop()
