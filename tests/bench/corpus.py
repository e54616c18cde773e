"""The side-by-side benches' messages: 4-60 KB, sizes and text from fixed seeds, so every run and
both servers of a comparison get the same bytes.

Message ``i`` has Subject "bench message <i>" and one body token ``zq<i % 50>zq`` (a SEARCH BODY
key matching 2% of the mailbox); every third message is appended with ``\\Seen``.
"""

from __future__ import annotations

import random

MIN_SIZE = 4 * 1024
MAX_SIZE = 60 * 1024
BODY_TOKENS = 50

_WORDS = [
    "mail",
    "server",
    "queue",
    "message",
    "header",
    "body",
    "folder",
    "client",
    "store",
    "fetch",
    "search",
    "index",
    "flag",
    "seen",
    "draft",
    "answered",
    "deleted",
    "recent",
    "unseen",
    "subject",
    "sender",
    "recipient",
    "relay",
    "domain",
    "session",
    "login",
    "account",
    "mailbox",
    "thread",
    "reply",
    "forward",
    "archive",
    "junk",
    "trash",
    "sent",
]


def _lines() -> list[bytes]:
    rng = random.Random(20261206)
    out = []
    for _ in range(1024):
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < 60:
            words.append(rng.choice(_WORDS))
        out.append(" ".join(words).encode() + b"\r\n")
    return out


_LINES = _lines()


def message(i: int) -> bytes:
    rng = random.Random(1939 * 1_000_003 + i)
    size = rng.randint(MIN_SIZE, MAX_SIZE)
    head = (
        "From: Bench Sender <sender@example.test>\r\n"
        "To: bench@example.test\r\n"
        f"Subject: bench message {i}\r\n"
        "Date: Sun, 06 Dec 2026 06:00:00 +0000\r\n"
        f"Message-ID: <{i}.bench@example.test>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        f"ref zq{i % BODY_TOKENS:02d}zq\r\n"
    ).encode()
    parts = [head]
    total = len(head)
    at = rng.randrange(len(_LINES))
    while total < size:
        line = _LINES[at % len(_LINES)]
        parts.append(line)
        total += len(line)
        at += 1
    return b"".join(parts)


def append_args(i: int) -> str:
    """APPEND's arguments before the literal: the mailbox, and a flag list for every third."""
    return "INBOX (\\Seen)" if i % 3 == 0 else "INBOX"
