"""Bare LF line ends made CRLF, whole and over any chunking (postmesh.common.line_ends)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from postmesh.common.line_ends import BareLfNormalizer, normalize_bare_lf


def test_whole() -> None:
    assert normalize_bare_lf(b"a\nb\r\nc\n") == b"a\r\nb\r\nc\r\n"
    assert normalize_bare_lf(b"\n") == b"\r\n"
    assert normalize_bare_lf(b"a\r\rb\r") == b"a\r\rb\r"  # a bare CR is left to the caller
    crlf = b"already\r\nfine\r\n"
    assert normalize_bare_lf(crlf) is crlf  # nothing to do: no copy


def test_a_crlf_split_across_chunks_stays_one() -> None:
    n = BareLfNormalizer()
    assert b"".join(n.feed(c) for c in (b"one\r", b"\ntwo\n", b"", b"\n", b"\r", b"x")) == (
        b"one\r\ntwo\r\n\r\n\rx"
    )


_OCTETS = st.lists(st.sampled_from(b"ab\r\n"), max_size=60).map(bytes)


@given(_OCTETS, st.lists(st.integers(0, 60), max_size=8))
def test_any_chunking_gives_the_whole_result(data: bytes, cuts: list[int]) -> None:
    points = sorted({0, len(data), *(min(c, len(data)) for c in cuts)})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    n = BareLfNormalizer()
    assert b"".join(n.feed(c) for c in chunks) == normalize_bare_lf(data)
