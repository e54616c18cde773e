"""``make bench --part idle``: how soon a message accepted over SMTP is announced to an IDLE
client on another imap-gw replica, at a fixed offered rate (issue 7 item 8: within 1 s at p99,
at 100 messages/s).

Two imap-gw replicas share the store and the bus. An IDLE session on replica 2 records when
each ``* n EXISTS`` arrives; senders on submission start message i at t0 + i / rate and record
when its 250 came. Afterwards a FETCH on replica 1 maps sequence numbers to messages, so each
message's latency is (first EXISTS covering its sequence number) - (its 250). Printed: offered
and achieved rate, p50/p99/max latency and the share announced within 1 s.
"""

from __future__ import annotations

import imaplib
import re
import smtplib
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from postmesh.common.devstack import Stack
from tests.bench.stacks import bench_stack
from tests.bench.stats import pct
from tests.integration.imap_idle import IdleClient
from tests.integration.infra.ports import free_port

PASSWORD = "bench-idle-password"
SENDERS = 8
EXISTS = re.compile(rb"^\* (\d+) EXISTS")


def message(i: int, user: str) -> bytes:
    head = f"From: {user}\r\nTo: {user}\r\nSubject: idle-bench {i}\r\n\r\n"
    return head.encode() + b"A short message, as most are.\r\n" * 40


def send(stack: Stack, user: str, indexes: list[int], t0: float, rate: float) -> dict[int, float]:
    """Send messages ``indexes``, each at its slot; returns index -> time of its 250."""
    accepted: dict[int, float] = {}
    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_submission, timeout=60) as s:
        s.login(user, PASSWORD)  # loopback: plaintext AUTH is allowed (ADR 4)
        for i in indexes:
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            s.sendmail(user, [user], message(i, user))
            accepted[i] = time.monotonic()
    return accepted


def watch(idler: IdleClient, count: int, seen: dict[int, float], timeout: float) -> None:
    """Record when each sequence number up to ``count`` is first covered by an EXISTS."""
    deadline = time.monotonic() + timeout
    highest = 0
    while highest < count and time.monotonic() < deadline:
        idler.sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            line = idler.file.readline()
        except TimeoutError:
            return
        if not line:
            return
        if m := EXISTS.match(line):
            now, n = time.monotonic(), int(m.group(1))
            for seq in range(highest + 1, n + 1):
                seen[seq] = now
            highest = max(highest, n)


def run(backend: str, messages: int, rate: float) -> None:
    with bench_stack(backend) as stack:
        user = f"idle-bench@{backend}.example.test"
        stack.ensure_user(user, PASSWORD)
        second = {"POSTMESH_IMAP_PORT": str(free_port()), "POSTMESH_IMAPS_PORT": str(free_port())}
        with stack.replica("imap-gw", "imap-gw-2", free_port(), second):
            idler = IdleClient(int(second["POSTMESH_IMAP_PORT"]))
            idler.command(f'LOGIN "{user}" "{PASSWORD}"')
            idler.command("SELECT INBOX")
            idler.idle()
            seen: dict[int, float] = {}
            watcher = threading.Thread(target=watch, args=(idler, messages, seen, 600.0))
            watcher.start()
            t0 = time.monotonic() + 0.5
            slots = [list(range(k, messages, SENDERS)) for k in range(SENDERS)]
            with ThreadPoolExecutor(SENDERS) as pool:
                parts = list(pool.map(lambda ix: send(stack, user, ix, t0, rate), slots))
            accepted = {i: t for part in parts for i, t in part.items()}
            send_s = max(accepted.values()) - t0
            watcher.join()
            idler.done()
            idler.close()
            with imaplib.IMAP4("127.0.0.1", stack.ports.imap) as m:
                m.login(user, PASSWORD)
                m.select("INBOX", readonly=True)
                _, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            index_of = {
                int(item[0].split()[0]): int(item[1].split(b"idle-bench ")[1].split()[0])
                for item in data
                if isinstance(item, tuple)
            }
            lat = [seen[s] - accepted[i] for s, i in index_of.items() if s in seen]
        missing = messages - len(lat)
        print(f"\n== IDLE on another imap-gw replica, {backend} backends, {messages} messages")
        print(
            f"offered {rate:6.1f} msg/s   accepted {len(accepted) / send_s:6.1f} msg/s   "
            f"announced {len(lat)}/{messages}" + (f" ({missing} never seen)" if missing else "")
        )
        if lat:
            within = sum(1 for x in lat if x <= 1.0) / len(lat)
            print(
                f"250 -> EXISTS    p50 {statistics.median(lat) * 1000:7.1f} ms  "
                f"p99 {pct(lat, 99) * 1000:7.1f} ms  max {max(lat) * 1000:7.1f} ms  "
                f"within 1 s {within:6.1%}"
            )


def main(backends: list[str], messages: int, rate: float) -> None:
    for backend in backends:
        run(backend, messages, rate)
