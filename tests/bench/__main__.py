"""``make bench``: throughput and latency of the whole system, printed as numbers.

Starts the six services (embedded backends by default; ``--backend distributed`` runs them on a
real Kafka + FerretDB from the integration infra), then measures:
- SMTP submission: messages/s accepted, p50/p99 of the time from end of DATA to the 250 reply;
- end to end: time until every accepted message is visible in IMAP (INBOX polled by STATUS
  every 50 ms, ``tests.bench.stacks.inbox_count``), after a warm-up of
  ``--warmup`` messages (shown apart: a stack just started is not in its steady state); with
  ``--backend both`` in ``--rounds`` rounds alternating which backend goes first, each on
  fresh stacks, and the median distributed/embedded ratio;
- IMAP FETCH (FLAGS RFC822.SIZE) of the whole mailbox and BODY.PEEK[] of single messages: ops/s;
- POP3 RETR: messages/s;
- remote relay into a Postfix smtp-sink, side by side with Postfix relaying the same load
  (``--part relay``, tests/bench/relay.py);
- IMAP commands and a mixed load, side by side with Dovecot 2.3 (``--part imap``,
  tests/bench/imap.py), and POP3 download sessions and logins, side by side with the same
  Dovecot (``--part pop3``, tests/bench/pop3.py);
- the MX under Postfix's smtp-source, side by side with a Postfix taking the same load
  (``--part smtp``, tests/bench/smtp.py);
- new mail announced to an IDLE client on a second imap-gw replica at a fixed offered rate
  (``--part idle``, tests/bench/idle.py).
Every loop is bounded in count; all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import functools
import imaplib
import poplib
import smtplib
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from postmesh.common.devstack import Stack
from tests.bench.stacks import bench_stack, inbox_count
from tests.bench.stats import pct, ratios, side_by_side

PASSWORD = "bench-password"


def message(i: int, size: int, user: str) -> bytes:
    # From: the logged-in user, as submission's sender check requires (553 5.7.1 otherwise).
    head = f"From: {user}\r\nTo: {user}\r\nSubject: bench {i}\r\n\r\n"
    line = ("x" * 76 + "\r\n").encode()
    return head.encode() + line * max(1, (size - len(head)) // len(line))


def smtp_worker(stack: Stack, user: str, count: int, size: int) -> list[float]:
    latencies = []
    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_submission, timeout=60) as s:
        s.login(user, PASSWORD)  # loopback: plaintext auth is allowed (ADR 4)
        for i in range(count):
            body = message(i, size, user)
            s.mail(user)
            s.rcpt(user)
            start = time.perf_counter()
            code, _ = s.data(body)
            latencies.append(time.perf_counter() - start)
            assert code == 250
    return latencies


def imap_count(stack: Stack, user: str) -> int:
    return inbox_count(stack.ports.imap, user, PASSWORD)


def send_and_wait(
    stack: Stack, user: str, sessions: int, messages: int, size: int, before: int
) -> tuple[list[float], float, float, int]:
    """Submit ``messages`` over ``sessions`` and wait until IMAP shows them all: DATA->250
    latencies, seconds to the last 250, seconds until visible, and how many are visible."""
    per = messages // sessions
    start = time.perf_counter()
    with ThreadPoolExecutor(sessions) as pool:
        results = list(pool.map(lambda _: smtp_worker(stack, user, per, size), range(sessions)))
    accept_s = time.perf_counter() - start
    lat = [x for r in results for x in r]
    deadline = time.monotonic() + 600
    while imap_count(stack, user) < before + len(lat) and time.monotonic() < deadline:
        time.sleep(0.05)
    e2e_s = time.perf_counter() - start
    return lat, accept_s, e2e_s, imap_count(stack, user) - before


def run(
    backend: str, messages: int, size: int, sessions: int, warmup: int = 0
) -> tuple[float, float]:
    """Prints the part's figures; returns the end-to-end rates (msg/s) of the measured
    messages and of the warm-up (0.0 without one)."""
    with bench_stack(backend) as stack:
        user = f"bench-{size}@example.test"
        stack.ensure_user(user, PASSWORD)
        before, cold = 0, 0.0
        if warmup:
            # A stack just started is not the steady state a deployment runs in: Kafka's JVM
            # compiles its code for the first ~1,300 messages (ADR 78), caches are empty.
            # Shown apart, then the measured load.
            _, _, cold_s, before = send_and_wait(stack, user, sessions, warmup, size, 0)
            cold = before / cold_s
            print(
                f"\n({backend}, {size // 1024} KiB: warm-up of {before} messages, "
                f"{cold:.1f} msg/s end to end from a cold start)"
            )
        lat, accept_s, e2e_s, delivered = send_and_wait(
            stack, user, sessions, messages, size, before
        )
        total = len(lat)

        print(
            f"\n== {backend} backends, {total} messages of {size // 1024} KiB, {sessions} sessions"
        )
        print(
            f"smtp submit      {total / accept_s:8.1f} msg/s   "
            f"DATA->250 p50 {statistics.median(lat) * 1000:6.1f} ms  p99 {pct(lat, 99) * 1000:6.1f} ms"
        )
        print(
            f"end to end       {delivered / e2e_s:8.1f} msg/s   all {delivered} in IMAP after {e2e_s:.2f} s"
        )

        with imaplib.IMAP4("127.0.0.1", stack.ports.imap) as m:
            m.login(user, PASSWORD)
            m.select("INBOX", readonly=True)
            rounds, t0 = 20, time.perf_counter()
            for _ in range(rounds):
                m.fetch("1:*", "(FLAGS RFC822.SIZE)")
            dt = time.perf_counter() - t0
            print(
                f"imap fetch 1:*   {rounds / dt:8.1f} ops/s   ({before + delivered} messages, FLAGS RFC822.SIZE)"
            )
            n = min(200, delivered)
            t0 = time.perf_counter()
            lat = []
            for i in range(1, n + 1):
                s0 = time.perf_counter()
                m.fetch(str(i), "(BODY.PEEK[])")
                lat.append(time.perf_counter() - s0)
            dt = time.perf_counter() - t0
            print(
                f"imap body fetch  {n / dt:8.1f} ops/s   p50 {statistics.median(lat) * 1000:6.1f} ms  "
                f"p99 {pct(lat, 99) * 1000:6.1f} ms"
            )

        pop = poplib.POP3("127.0.0.1", stack.ports.pop3, timeout=60)
        pop.user(user)
        pop.pass_(PASSWORD)
        n = min(200, delivered)
        t0 = time.perf_counter()
        for i in range(1, n + 1):
            pop.retr(i)
        dt = time.perf_counter() - t0
        pop.quit()
        print(f"pop3 retr        {n / dt:8.1f} msg/s")
    return delivered / e2e_s, cold


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--backend", choices=["embedded", "distributed", "both"], default="both")
    ap.add_argument("--messages", type=int, default=400, help="per case (store, relay parts)")
    # A few seconds a run: 400 messages took the embedded stack ~0.8 s, where the first
    # submissions and the last delivery weighed as much as the steady rate.
    ap.add_argument("--system-messages", type=int, default=1200, help="per run (system part)")
    ap.add_argument("--sessions", type=int, default=8)
    # As many as measured: with 100, Kafka's JIT compiler and the stacks' first groups still
    # took a quarter of the distributed stack's CPU in the measured window (ADR 78).
    ap.add_argument(
        "--warmup", type=int, default=1200, help="messages before the measured ones (system part)"
    )
    ap.add_argument("--sizes", default="4096,102400", help="message sizes in bytes")
    ap.add_argument(
        "--part",
        choices=["system", "store", "relay", "imap", "pop3", "smtp", "idle", "all"],
        default="all",
    )
    ap.add_argument("--search-messages", type=int, default=10_000)
    # FerretDB 1.24's SQLite handler pushes only _id filters down and scans the collection for
    # every other query, so filling it grows quadratically; production MongoDB uses the indexes.
    ap.add_argument("--distributed-search-messages", type=int, default=2_000)
    ap.add_argument("--imap-messages", type=int, default=10_000, help="mailbox size (imap part)")
    ap.add_argument("--imap-clients", type=int, default=10, help="mixed-load clients")
    ap.add_argument("--imap-sessions", type=int, default=10, help="mixed-load sessions per client")
    # Seconds a case, not half of one: 500 messages took 20 sessions ~0.5 s, mostly set-up.
    ap.add_argument("--smtp-messages", type=int, default=2000, help="per case (smtp part)")
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="side-by-side rounds a case (system with both backends, relay, smtp, pop3, imap)",
    )
    ap.add_argument("--pop3-messages", type=int, default=100)
    # ~3 s a round: 20 sessions (~0.6 s) moved a round's ratio by up to 15 %.
    ap.add_argument("--pop3-sessions", type=int, default=100)
    ap.add_argument("--idle-messages", type=int, default=1000)
    ap.add_argument("--idle-rate", type=float, default=100.0, help="offered msg/s (idle part)")
    args = ap.parse_args()
    backends = ["embedded", "distributed"] if args.backend == "both" else [args.backend]
    if args.part in ("system", "all"):
        sizes = [int(s) for s in args.sizes.split(",")]

        def system(backend: str, size: int) -> tuple[float, float]:
            return run(backend, args.system_messages, size, args.sessions, args.warmup)

        if len(backends) == 2:
            # Issue 11's figure: the distributed path against the embedded default, in rounds
            # that alternate which goes first, each on fresh stacks; the median ratio.
            pairs = {
                size: [
                    side_by_side(
                        r,
                        functools.partial(system, "distributed", size),
                        functools.partial(system, "embedded", size),
                    )
                    for r in range(args.rounds)
                ]
                for size in sizes
            }

            def ratio_lines(which: int) -> None:
                """Per size, the rounds' ratio of the measured rates (0) or the warm-ups' (1)."""
                for size, each in pairs.items():
                    chosen = [(d[which], e[which]) for d, e in each]
                    rates = ", ".join(f"{d:.1f} / {e:.1f}" for d, e in chosen)
                    print(f"{size // 1024:>4} KiB  {ratios(chosen)}  msg/s: {rates}")

            print("\n== end to end, distributed / embedded (target: at least 0.5x)")
            ratio_lines(0)
            if args.warmup:
                print(
                    f"   the warm-ups ({args.warmup} messages from a cold start), for comparison:"
                )
                ratio_lines(1)
        else:
            for size in sizes:
                system(backends[0], size)
    if args.part in ("store", "all"):
        from tests.bench import store

        store.main(backends, args.messages, args.search_messages, args.distributed_search_messages)
    if args.part in ("relay", "all"):
        from tests.bench import relay

        relay.main(
            args.messages, args.sessions, [int(s) for s in args.sizes.split(",")], args.rounds
        )
    if args.part in ("imap", "all"):
        from tests.bench import imap

        imap.main(args.imap_messages, args.imap_clients, args.imap_sessions, args.rounds)
    if args.part in ("smtp", "all"):
        from tests.bench import smtp

        smtp.main(args.smtp_messages, args.rounds)
    if args.part in ("pop3", "all"):
        from tests.bench import pop3

        pop3.main(args.pop3_messages, args.pop3_sessions, rounds=args.rounds)
    if args.part in ("idle", "all"):
        from tests.bench import idle

        idle.main(backends, args.idle_messages, args.idle_rate)


if __name__ == "__main__":
    main()
