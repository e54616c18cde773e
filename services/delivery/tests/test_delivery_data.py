"""DATA's payload is byte for byte what aiosmtplib's execute_data_command would send."""

from __future__ import annotations

import itertools

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from postmesh.delivery.data import payload


def aiosmtplib_payload(content: bytes) -> bytes:
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(content)) + b".\r\n"


PIECES = [b"a", b".", b"..", b"\r\n", b"\n", b"\r", b"\r\r\n", b"\xff", b" ."]


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b".",
        b".\r\n",
        b"From: a\r\n\r\n.leading\r\n..two\r\n.\r\nlast without CRLF",
        b"bare\nLF\n.dot after LF\n",
        b"bare\rCR\r.dot after CR",
        b"\r\n.\r\n.\r\n",
        b"x" * 100_000 + b"\r\n.end\r\n",
    ]
    + [b"".join(p) for p in itertools.product(PIECES, repeat=3)],
)
def test_payload_matches_aiosmtplib(content: bytes) -> None:
    assert payload(content) == aiosmtplib_payload(content)
