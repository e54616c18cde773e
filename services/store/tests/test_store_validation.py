"""Names and flags as the store canonicalises them (RFC 9051)."""

from __future__ import annotations

import pytest

from postmesh.store import validation as v
from postmesh.store.errors import InvalidArgument
from postmesh.store.model import FlagsMode


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("", "INBOX"),
        ("inbox", "INBOX"),
        ("Inbox/Sub", "INBOX/Sub"),
        ("Inboxes", "Inboxes"),
        ("Archive/2026", "Archive/2026"),
        ("Entw\u0075\u0308rfe", "Entw\u00fcrfe"),  # NFC (RFC 5198)
    ],
)
def test_mailbox_names(given: str, canonical: str) -> None:
    assert v.mailbox_name(given) == canonical


@pytest.mark.parametrize("bad", ["/", "a/", "/a", "a//b", "a*", "a%b", "a\tb", "\x7f", "é" * 300])
def test_bad_mailbox_names(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        v.mailbox_name(bad)


def test_flags_are_canonical_and_sorted() -> None:
    assert v.flags(["$Work", "\\SEEN", "\\flagged", "\\Seen", "NonJunk"]) == (
        "\\Flagged", "\\Seen", "$Work", "NonJunk",
    )  # fmt: skip
    assert v.apply_flags(["\\Seen"], FlagsMode.ADD, ("$A",)) == ("\\Seen", "$A")
    assert v.apply_flags(["\\Seen", "$A"], FlagsMode.REMOVE, ("\\Seen", "$B")) == ("$A",)
    assert v.apply_flags(["\\Seen"], FlagsMode.REPLACE, ()) == ()
    with pytest.raises(InvalidArgument):
        v.flags([f"k{i}" for i in range(v.MAX_FLAGS + 1)])


def test_blob_ids_and_uids() -> None:
    assert v.blob_id("a" * 64) == "a" * 64
    for bad in ("A" * 64, "a" * 63, "g" * 64, ""):
        with pytest.raises(InvalidArgument):
            v.blob_id(bad)
    for bad_uid in (0, -1, 2**32):
        with pytest.raises(InvalidArgument):
            v.uid(bad_uid)
