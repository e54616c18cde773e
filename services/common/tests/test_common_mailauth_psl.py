"""The offline Public Suffix List against the list's own test vectors (test_psl.txt)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from postmesh.common.mailauth.psl import SuffixList, default_list, organizational_domain

_CASE = re.compile(r"checkPublicSuffix\((null|'[^']*'), (null|'[^']*')\);")


def _vectors() -> list[tuple[str | None, str | None]]:
    text = (Path(__file__).parent / "data" / "psl_test_vectors.txt").read_text(encoding="utf-8")
    out = []
    for line in text.splitlines():
        m = _CASE.match(line)  # lines starting with // are commented out
        if m:
            a, b = (None if v == "null" else v.strip("'") for v in m.groups())
            out.append((a, b))
    return out


VECTORS = _vectors()


def test_vectors_were_read() -> None:
    assert len(VECTORS) > 60


@pytest.mark.parametrize(("domain", "expected"), VECTORS)
def test_registrable_domain(domain: str | None, expected: str | None) -> None:
    if domain is None:
        return  # the null input of the JavaScript API has no Python counterpart
    assert default_list().registrable_domain(domain) == expected


def test_organizational_domain_for_dmarc() -> None:
    assert organizational_domain("Mail.Example.CO.UK.") == "example.co.uk"
    assert organizational_domain("a.b.example.com") == "example.com"
    assert organizational_domain("co.uk") == "co.uk"  # a suffix is its own
    assert organizational_domain("foo.github.io") == "foo.github.io"  # private section


def test_rules_wildcard_and_exception() -> None:
    psl = SuffixList.parse("// c\nexample\n*.wild.example\n!keep.wild.example\n")
    assert psl.public_suffix("a.b.wild.example") == "b.wild.example"
    assert psl.registrable_domain("a.b.wild.example") == "a.b.wild.example"
    assert psl.registrable_domain("x.keep.wild.example") == "keep.wild.example"
    assert psl.registrable_domain("unlisted") is None
