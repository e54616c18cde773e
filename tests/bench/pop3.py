"""``make bench`` part ``pop3``: POP3 side by side, Postmesh (embedded stack) against a private
Dovecot 2.3 (tests/bench/dovecot.py), in one run, both up throughout and measured in alternating rounds, with the same raw-socket client
(tests/bench/wire.py) and the same maildrop (tests/bench/corpus.py: 100 messages of 4-60 KB,
put in by IMAP APPEND on both).

- download session: login, STAT, UIDL, RETR of every message, QUIT, one after another (nothing
  is deleted, so every session downloads the same maildrop): sessions/s, p50/p99;
- authentication: connect, USER/PASS, QUIT: logins/s. Postmesh runs with its defaults (argon2id
  hashes, login cache on); Dovecot with its defaults (no auth cache) and a plaintext passdb
  entry; then, once, both with the hash's cost in every login: a second Postmesh stack with its
  login cache off, and a Dovecot ARGON2ID entry.

``python -m tests.bench.pop3 [--pop3-messages 100] [--pop3-sessions 100] [--keep]``; all traffic
stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

from tests.bench.dovecot import Dovecot
from tests.bench.imap import PASSWORD, USER, Timing, fill, timed
from tests.bench.stats import ratios, side_by_side
from tests.bench.wire import Pop3
from tests.integration.stack import embedded_env, start_stack

ARGON2_USER = "bench-argon2@example.test"
AUTHS = 200
ARGON2_AUTHS = 50  # each pays the hash (~50-300 ms a login)


def session(port: int, user: str = USER) -> int:
    pop = Pop3(port)
    pop.login(user, PASSWORD)
    count = int(pop.command("STAT").split()[1])
    pop.command("UIDL", multiline=True)
    for i in range(1, count + 1):
        pop.command(f"RETR {i}", multiline=True)
    pop.quit()
    return count


def login_quit(port: int, user: str, _round: int = 0) -> None:
    pop = Pop3(port)
    pop.login(user, PASSWORD)
    pop.quit()


def prepare(imap_port: int, port: int, messages: int, users: list[str]) -> None:
    """The maildrop, and a first session and login of each user (the first session builds the
    UIDL list; Postmesh's first login pays argon2, later ones are cached)."""
    fill(imap_port, messages)
    session(port)
    for user in users:
        login_quit(port, user)


def bench(port: int, sessions: int, users: list[str]) -> dict[str, Timing]:
    t, res = timed(lambda _: session(port), sessions)
    t.note = f"{res[-1]} messages each"
    out = {"download session": t}
    for user in users:
        out[f"login+QUIT {user}"], _ = timed(functools.partial(login_quit, port, user), AUTHS)
    return out


def argon2_logins(tmp: Path) -> Timing:
    """login+QUIT on a stack whose login cache is off (POSTMESH_AUTH_LOGIN_CACHE_SECONDS=0), so
    every login verifies the argon2id hash, as Dovecot's ARGON2ID line does (issue 10: logins
    per second with the hash's cost)."""
    stack = start_stack(tmp, {**embedded_env(), "POSTMESH_AUTH_LOGIN_CACHE_SECONDS": "0"})
    try:
        stack.ensure_user(USER, PASSWORD)
        login_quit(stack.ports.pop3, USER)
        t, _ = timed(functools.partial(login_quit, stack.ports.pop3, USER), ARGON2_AUTHS)
        return t
    finally:
        stack.stop()


def line(name: str, t: Timing) -> str:
    return (
        f"{name:<44}{t.ops_per_s:>9.1f}/s   p50 {t.pct(50) * 1000:7.1f} ms"
        f"  p99 {t.pct(99) * 1000:7.1f} ms"
    )


def main(messages: int = 100, sessions: int = 100, keep: bool = False, rounds: int = 3) -> None:
    """Both servers up throughout; ``rounds`` rounds, each measuring the two one after the
    other (which goes first alternates), each round's ratio and their median printed."""
    with (
        tempfile.TemporaryDirectory(prefix="postmesh-bench-pop3-") as tmp,
        Dovecot({USER: PASSWORD}, argon2_users={ARGON2_USER: PASSWORD}) as dovecot,
    ):
        stack = start_stack(Path(tmp), embedded_env())
        try:
            stack.ensure_user(USER, PASSWORD)
            prepare(stack.ports.imap, stack.ports.pop3, messages, [USER])
            prepare(dovecot.imap_port, dovecot.pop3_port, messages, [USER, ARGON2_USER])
            if keep:
                print(f"postmesh pop3 port {stack.ports.pop3}; Ctrl-C to stop")
                while True:
                    time.sleep(3600)
            rounds_run: list[tuple[dict[str, Timing], dict[str, Timing]]] = []
            for r in range(rounds):
                # Dovecot's ARGON2ID logins (~0.3 s each) once: the hash's cost, not a ratio.
                their_users = [USER, ARGON2_USER] if r == 0 else [USER]
                rounds_run.append(
                    side_by_side(
                        r,
                        functools.partial(bench, stack.ports.pop3, sessions, [USER]),
                        functools.partial(bench, dovecot.pop3_port, sessions, their_users),
                    )
                )
        finally:
            stack.stop()
        uncached = argon2_logins(Path(tmp) / "uncached")
    for r, (ours, theirs) in enumerate(rounds_run, 1):
        report(messages, r, ours, theirs)
    sessions_pairs = [
        (o["download session"].ops_per_s, t["download session"].ops_per_s) for o, t in rounds_run
    ]
    login_pairs = [
        (o[f"login+QUIT {USER}"].ops_per_s, t[f"login+QUIT {USER}"].ops_per_s)
        for o, t in rounds_run
    ]
    argon = rounds_run[0][1][f"login+QUIT {ARGON2_USER}"]
    print(
        "\n== POP3 authentications with the hash's cost, once (no login cache, no auth cache)\n"
        + line("postmesh login+QUIT (argon2id, RFC 9106 low-memory)", uncached)
        + "\n"
        + line("dovecot login+QUIT (ARGON2ID, doveadm pw defaults)", argon)
    )
    print(
        f"\n== POP3, {rounds} rounds: download session ratio {ratios(sessions_pairs)} dovecot; "
        f"login+QUIT ratio {ratios(login_pairs)} dovecot plaintext"
    )


def report(messages: int, r: int, ours: dict[str, Timing], theirs: dict[str, Timing]) -> None:
    a, b = ours["download session"], theirs["download session"]
    print(
        f"\n== POP3 side by side, round {r}: session = login, STAT, UIDL, RETR x{messages} "
        f"(4-60 KB, {a.note}), QUIT; same raw-socket client\n"
        + line("postmesh download session", a)
        + "\n"
        + line("dovecot download session", b)
        + f"\nratio {a.ops_per_s / b.ops_per_s:.2f}x dovecot"
    )
    ours_auth = ours[f"login+QUIT {USER}"]
    plain, argon = theirs[f"login+QUIT {USER}"], theirs.get(f"login+QUIT {ARGON2_USER}")
    print(
        line("postmesh login+QUIT (argon2id, login cache)", ours_auth)
        + "\n"
        + line("dovecot login+QUIT (plaintext passdb)", plain)
        + ("\n" + line("dovecot login+QUIT (ARGON2ID, no cache)", argon) if argon else "")
        + f"\nratio {ours_auth.ops_per_s / plain.ops_per_s:.2f}x dovecot plaintext"
        + (f", {ours_auth.ops_per_s / argon.ops_per_s:.2f}x dovecot ARGON2ID" if argon else "")
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # ~3 s a round: 20 sessions (~0.6 s) moved a round's ratio by up to 15 %.
    ap.add_argument("--pop3-sessions", type=int, default=100)
    ap.add_argument("--pop3-messages", type=int, default=100)
    ap.add_argument("--keep", action="store_true", help="keep Postmesh up after it (profiling)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    main(args.pop3_messages, args.pop3_sessions, args.keep, args.rounds)
