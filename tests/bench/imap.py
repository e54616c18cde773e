"""``make bench`` part ``imap``: IMAP commands side by side, Postmesh (embedded stack) against a
private Dovecot 2.3 (tests/bench/dovecot.py), in one run, with the same raw-socket client
(tests/bench/wire.py) and the same messages (tests/bench/corpus.py, 4-60 KB).

Both servers run at once. Each gets its mailbox filled by APPEND (10,000 messages by default),
then, in rounds (3 by default) that alternate which server goes first, one client, one command
at a time: SELECT of that mailbox; UID FETCH 1:* (FLAGS); FETCH BODY.PEEK[HEADER] of 1,000
messages; BODY.PEEK[] of single messages; STORE +FLAGS (\\Flagged) of single messages; APPEND
of new messages; SEARCH SUBJECT / UNSEEN / BODY; SORT (REVERSE DATE), SORT (SUBJECT) and THREAD
REFERENCES of the whole mailbox; then a mixed load of concurrent clients, each
session: login, LIST, SELECT, FETCH, STORE, EXPUNGE, APPEND, logout. Printed per round and
command: ops/s, p50/p99, and the Postmesh/Dovecot ratio of ops/s; then each command's median
ratio over the rounds. Before all that, on servers that have served nothing yet, the server
memory an idle session costs (issue 7's target: at most 64 KiB): 400 sessions (10 users x 40)
logged in, their empty INBOX selected, in IDLE, and the PSS of imap-gw (Postmesh) or of all
Dovecot's processes (one per session in its default model) before and after, per session.
Every round appends content of its own (never a copy of an earlier message, which a
content-addressed store would not store again). Every loop is bounded; all traffic stays on
127.0.0.1.
"""

from __future__ import annotations

import argparse
import functools
import random
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tests.bench.corpus import append_args, message
from tests.bench.dovecot import Dovecot
from tests.bench.stats import ratios, side_by_side
from tests.bench.wire import Imap, ProtocolError
from tests.integration.stack import embedded_env, start_stack

USER = "bench@example.test"
PASSWORD = "bench-password"
SINGLE_OPS = 200  # BODY.PEEK[], STORE and APPEND of single messages
# Idle sessions for the memory line: 40 a user (Postmesh's per-user cap is 50).
IDLE_USERS = [f"bench-idle{i}@example.test" for i in range(10)]
IDLE_PER_USER = 40
# Round r's new messages have corpus indexes from (r + 1) * ROUND_INDEX on: new content each round.
ROUND_INDEX = 1_000_000
_EXISTS = re.compile(rb"^\* (\d+) EXISTS", re.M)
_APPENDUID = re.compile(rb"\[APPENDUID \d+ (\d+)\]")
R = TypeVar("R")


@dataclass
class Timing:
    latencies: list[float]
    elapsed: float
    note: str = ""  # what the bench checked: a count both servers must agree on

    @property
    def ops_per_s(self) -> float:
        return len(self.latencies) / self.elapsed

    def pct(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def timed(op: Callable[[int], R], count: int) -> tuple[Timing, list[R]]:
    latencies, results = [], []
    t0 = time.perf_counter()
    for k in range(count):
        s0 = time.perf_counter()
        results.append(op(k))
        latencies.append(time.perf_counter() - s0)
    return Timing(latencies, time.perf_counter() - t0), results


def exists(untagged: list[bytes]) -> int:
    for resp in untagged:
        m = _EXISTS.match(resp)
        if m:
            return int(m.group(1))
    raise ProtocolError("SELECT without EXISTS")


def appended_uid(c: Imap) -> int:
    m = _APPENDUID.search(c.status)
    if m is None:
        raise ProtocolError(f"APPEND without APPENDUID (RFC 4315): {c.status!r}")
    return int(m.group(1))


def search_hits(untagged: list[bytes]) -> int:
    return sum(len(r.split()) - 2 for r in untagged if r.startswith(b"* SEARCH"))


def sorted_count(untagged: list[bytes]) -> int:
    return sum(len(r.split()) - 2 for r in untagged if r.startswith(b"* SORT"))


def thread_roots(untagged: list[bytes]) -> int:
    """How many threads a ``* THREAD`` answer lists (top-level parenthesised lists)."""
    roots = 0
    for r in untagged:
        if r.startswith(b"* THREAD"):
            depth = 0
            for ch in r[9:]:
                if ch == 0x28:
                    roots += depth == 0
                    depth += 1
                elif ch == 0x29:
                    depth -= 1
    return roots


def fill(port: int, count: int) -> Timing:
    c = Imap(port)
    c.login(USER, PASSWORD)
    t, _ = timed(lambda i: c.command(f"APPEND {append_args(i)}", message(i)), count)
    c.logout()
    t.note = f"{count} messages"
    return t


def commands(port: int, n: int, round_: int = 0) -> dict[str, Timing]:
    """One client, one command at a time, on the filled INBOX of ``n`` messages (and what
    earlier rounds appended)."""
    out: dict[str, Timing] = {}
    rng = random.Random(7 + round_)
    c = Imap(port)
    c.login(USER, PASSWORD)
    c.command("SELECT INBOX")  # warm-up: the first open of the mailbox after the fill

    t, res = timed(lambda _: exists(c.command("SELECT INBOX")), 20)
    t.note = f"EXISTS {res[-1]}"
    out["SELECT"] = t

    t, res = timed(lambda _: len(c.command("UID FETCH 1:* (FLAGS)")), 10)
    t.note = f"{res[-1]} FETCH lines"
    out["UID FETCH 1:* (FLAGS)"] = t

    size = min(1000, n)
    rounds = max(1, min(10, n // size))
    t, res = timed(
        lambda r: len(c.command(f"FETCH {r * size + 1}:{(r + 1) * size} (BODY.PEEK[HEADER])")),
        rounds,
    )
    t.note = f"{res[-1]} messages each"
    out[f"FETCH headers x{size}"] = t

    seqs = [rng.randint(1, n) for _ in range(SINGLE_OPS)]
    t, res = timed(lambda k: len(c.command(f"FETCH {seqs[k]} BODY.PEEK[]")[0]), SINGLE_OPS)
    t.note = f"{sum(res) // len(res) // 1024} KiB avg"
    out["FETCH BODY.PEEK[] x1"] = t

    seqs = [rng.randint(1, n) for _ in range(SINGLE_OPS)]
    t, _ = timed(lambda k: c.command(f"STORE {seqs[k]} +FLAGS (\\Flagged)"), SINGLE_OPS)
    out["STORE +FLAGS x1"] = t

    first = (round_ + 1) * ROUND_INDEX
    t, _ = timed(
        lambda k: c.command(f"APPEND {append_args(first + k)}", message(first + k)), SINGLE_OPS
    )
    out["APPEND x1"] = t

    subjects = [rng.randrange(n) for _ in range(10)]
    t, res = timed(
        lambda k: search_hits(c.command(f'SEARCH SUBJECT "bench message {subjects[k]}"')), 10
    )
    t.note = f"{sum(res)} hits"
    out["SEARCH SUBJECT"] = t
    t, res = timed(lambda _: search_hits(c.command("SEARCH UNSEEN")), 10)
    t.note = f"{res[-1]} hits"
    out["SEARCH UNSEEN"] = t
    t, res = timed(lambda k: search_hits(c.command(f"SEARCH BODY zq{k:02d}zq")), 5)
    t.note = f"{sum(res)} hits"
    out["SEARCH BODY"] = t
    # RFC 5256 on the whole mailbox: what a webmail asks for a folder's first page.
    t, res = timed(lambda _: sorted_count(c.command("SORT (REVERSE DATE) UTF-8 ALL")), 5)
    t.note = f"{res[-1]} messages"
    out["SORT (REVERSE DATE)"] = t
    t, res = timed(lambda _: sorted_count(c.command("SORT (SUBJECT) UTF-8 ALL")), 5)
    t.note = f"{res[-1]} messages"
    out["SORT (SUBJECT)"] = t
    t, res = timed(lambda _: thread_roots(c.command("THREAD REFERENCES UTF-8 ALL")), 5)
    t.note = f"{res[-1]} threads"
    out["THREAD REFERENCES"] = t
    c.logout()
    return out


def mixed_session(port: int, n: int, index: int, prev_uid: int, seq: int) -> int:
    """login, LIST, SELECT, FETCH, STORE, EXPUNGE, APPEND, LOGOUT; returns the appended UID.

    It fetches among the ``n`` filled messages (never expunged, so concurrent EXPUNGEs cannot
    make the fetch fail) and deletes the message this client appended in its previous session,
    so the mailbox keeps its size."""
    c = Imap(port)
    c.login(USER, PASSWORD)
    c.command('LIST "" "*"')
    exists(c.command("SELECT INBOX"))
    c.command(f"FETCH {seq}:{seq + 9} (FLAGS BODY.PEEK[HEADER])")
    c.command(f"FETCH {seq} BODY.PEEK[]")
    c.command(f"UID STORE {prev_uid} +FLAGS.SILENT (\\Deleted)")
    c.command("EXPUNGE")
    c.command(f"APPEND {append_args(index)}", message(index))
    uid = appended_uid(c)
    c.logout()
    return uid


def mixed(port: int, n: int, clients: int, sessions: int, round_: int = 0) -> Timing:
    first = (round_ + 1) * ROUND_INDEX + ROUND_INDEX // 2  # past the round's APPEND x1

    def seed(client: int) -> int:
        c = Imap(port)
        c.login(USER, PASSWORD)
        c.command(f"APPEND {append_args(first + client)}", message(first + client))
        uid = appended_uid(c)
        c.logout()
        return uid

    def client(k: int, first_uid: int) -> list[float]:
        rng = random.Random(k)
        uid, latencies = first_uid, []
        for s in range(sessions):
            s0 = time.perf_counter()
            index = first + clients + k * sessions + s
            uid = mixed_session(port, n, index, uid, rng.randint(1, max(1, n - 9)))
            latencies.append(time.perf_counter() - s0)
        return latencies

    firsts = [seed(k) for k in range(clients)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        per_client = list(pool.map(client, range(clients), firsts))
    elapsed = time.perf_counter() - t0
    c = Imap(port)
    c.login(USER, PASSWORD)
    left = exists(c.command("EXAMINE INBOX"))
    c.logout()
    return Timing([x for lat in per_client for x in lat], elapsed, f"EXISTS {left} after")


def pss_kib(pids: Iterable[int]) -> int:
    """Proportional set size (shared pages split among their sharers) of ``pids``, in KiB."""
    total = 0
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue  # exited meanwhile
        total += next(int(x.split()[1]) for x in rollup.splitlines() if x.startswith("Pss:"))
    return total


def process_tree(root: int) -> list[int]:
    """``root`` and every process descended from it."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, _, rest = stat.read_text().partition(" (")
            ppid = int(rest.rsplit(") ", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(head))
        except (OSError, IndexError, ValueError):
            continue
    out: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def idle_memory(port: int, pids: Callable[[], list[int]]) -> float:
    """Server memory (PSS of ``pids()``, KiB) per idle session: logged in, INBOX selected, in
    IDLE (RFC 2177), as a mail client leaves one open."""
    # One session first: what the first one makes once (channels, caches) is not per session.
    warm = Imap(port)
    warm.login(IDLE_USERS[0], PASSWORD)
    warm.command("SELECT INBOX")
    warm.done(warm.idle())
    warm.logout()
    time.sleep(1.0)
    before = pss_kib(pids())
    clients: list[tuple[Imap, bytes]] = []
    try:
        for user in IDLE_USERS:
            for _ in range(IDLE_PER_USER):
                c = Imap(port)
                clients.append((c, b""))
                c.login(user, PASSWORD)
                c.command("SELECT INBOX")
                clients[-1] = (c, c.idle())
        time.sleep(1.0)  # the servers' own follow-up (timers, lazily built state) settles
        after = pss_kib(pids())
    finally:
        for c, tag in clients:
            try:
                if tag:
                    c.done(tag)
                c.logout()
            except (OSError, ProtocolError):
                c.close()
    return (after - before) / len(clients)


def run_round(port: int, n: int, clients: int, sessions: int, round_: int) -> dict[str, Timing]:
    out = commands(port, n, round_)
    out[f"mixed, {clients} clients (sessions)"] = mixed(port, n, clients, sessions, round_)
    return out


def line(name: str, a: Timing, b: Timing) -> str:
    note = a.note if a.note == b.note else f"{a.note} / dovecot {b.note}"
    return (
        f"{name:<32}{a.ops_per_s:>15.1f}{statistics.median(a.latencies) * 1000:>9.1f}"
        f"{a.pct(99) * 1000:>9.1f}{b.ops_per_s:>15.1f}"
        f"{statistics.median(b.latencies) * 1000:>9.1f}{b.pct(99) * 1000:>9.1f}"
        f"{a.ops_per_s / b.ops_per_s:>7.2f}x   {note}"
    )


def report(title: str, ours: dict[str, Timing], theirs: dict[str, Timing]) -> None:
    print(f"\n== {title}")
    print(
        f"{'command':<32}{'postmesh ops/s':>15}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'dovecot ops/s':>15}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>8}   checked"
    )
    for name, a in ours.items():
        print(line(name, a, theirs[name]))


def main(messages: int, clients: int = 10, sessions: int = 10, rounds: int = 3) -> None:
    with tempfile.TemporaryDirectory(prefix="postmesh-bench-imap-") as tmp:
        stack = start_stack(Path(tmp), embedded_env())
        try:
            for user in (USER, *IDLE_USERS):
                stack.ensure_user(user, PASSWORD)
            users = {u: PASSWORD for u in (USER, *IDLE_USERS)}
            with Dovecot(users) as dovecot:
                ports = (stack.ports.imap, dovecot.imap_port)
                # First, on servers that have done nothing else yet: a process that has served
                # the rounds keeps freed memory that new sessions would take up unseen.
                imap_gw = stack.procs["imap-gw"].pid
                memory = (
                    idle_memory(stack.ports.imap, lambda: [imap_gw]),
                    idle_memory(dovecot.imap_port, lambda: process_tree(dovecot.pid)),
                )
                filled = side_by_side(
                    0, *(functools.partial(fill, port, messages) for port in ports)
                )
                rounds_run = [
                    side_by_side(
                        r,
                        *(
                            functools.partial(run_round, port, messages, clients, sessions, r)
                            for port in ports
                        ),
                    )
                    for r in range(rounds)
                ]
        finally:
            stack.stop()
    what = (
        f"{messages} messages of 4-60 KB, same raw-socket client, "
        "Postmesh embedded vs Dovecot 2.3 (defaults)"
    )
    report(
        f"IMAP side by side, fill: {what}",
        {"APPEND (fill)": filled[0]},
        {"APPEND (fill)": filled[1]},
    )
    for r, (ours, theirs) in enumerate(rounds_run, 1):
        report(f"IMAP side by side, round {r} of {rounds}", ours, theirs)
    sessions = len(IDLE_USERS) * IDLE_PER_USER
    print(
        f"\n== IMAP idle sessions ({sessions}: logged in, INBOX (empty) selected, IDLE), memory"
        f" (PSS) each: postmesh imap-gw {memory[0]:.1f} KiB (target: at most 64),"
        f" dovecot (all its processes) {memory[1]:.1f} KiB"
    )
    print(f"\n== IMAP, {rounds} rounds: Postmesh/Dovecot ops/s per command")
    for name in rounds_run[0][0]:
        pairs = [(o[name].ops_per_s, t[name].ops_per_s) for o, t in rounds_run]
        print(f"{name:<32} {ratios(pairs)}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--imap-messages", type=int, default=10_000)
    ap.add_argument("--imap-clients", type=int, default=10)
    ap.add_argument("--imap-sessions", type=int, default=10, help="mixed-load sessions per client")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    main(args.imap_messages, args.imap_clients, args.imap_sessions, args.rounds)
