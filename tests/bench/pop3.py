"""POP3 download sessions: login, STAT, UIDL, RETR of every message, QUIT; sessions/s.

``python -m tests.bench.pop3 [--sessions N] [--messages 100]`` starts the embedded stack, fills one
maildrop with messages of 4-60 KB over SMTP, then runs whole sessions one after another with
poplib (nothing is deleted, so every session downloads the same maildrop). All on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import poplib
import random
import smtplib
import tempfile
import time
from pathlib import Path

from postmesh.common.devstack import Stack
from tests.integration.stack import embedded_env, start_stack, wait_for

PASSWORD = "bench-password"


def fill(stack: Stack, user: str, count: int) -> int:
    rng = random.Random(1939)
    line = b"y" * 76 + b"\r\n"
    total = 0
    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_submission, timeout=60) as s:
        s.login(user, PASSWORD)
        for i in range(count):
            size = rng.randint(4 * 1024, 60 * 1024)
            head = f"From: {user}\r\nTo: {user}\r\nSubject: pop3 bench {i}\r\n\r\n".encode()
            body = head + line * max(1, (size - len(head)) // len(line))
            s.sendmail(user, [user], body)
            total += len(body)
    return total


def session(port: int, user: str) -> int:
    pop = poplib.POP3("127.0.0.1", port, timeout=60)
    pop.user(user)
    pop.pass_(PASSWORD)
    count, _ = pop.stat()
    pop.uidl()
    octets = 0
    for i in range(1, count + 1):
        _, _lines, n = pop.retr(i)
        octets += n
    pop.quit()
    return count


def measure(port: int, user: str, sessions: int) -> float:
    t0 = time.perf_counter()
    for _ in range(sessions):
        session(port, user)
    return sessions / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--messages", type=int, default=100)
    ap.add_argument("--keep", action="store_true", help="print the port and wait (profiling)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="postmesh-bench-pop3-") as tmp:
        stack = start_stack(Path(tmp), embedded_env())
        try:
            user = "pop3bench@example.test"
            stack.ensure_user(user, PASSWORD)
            octets = fill(stack, user, args.messages)
            wait_for(
                lambda: session(stack.ports.pop3, user) == args.messages or None,
                timeout=120,
                what="messages delivered",
            )
            session(stack.ports.pop3, user)  # warm up
            rate = measure(stack.ports.pop3, user, args.sessions)
            print(
                f"pop3 session (login, STAT, UIDL, {args.messages} x RETR, QUIT; "
                f"{octets / args.messages / 1024:.0f} KiB avg): {rate:.2f} sessions/s"
            )
            if args.keep:
                print(f"pop3 port {stack.ports.pop3}; Ctrl-C to stop")
                while True:
                    time.sleep(3600)
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
