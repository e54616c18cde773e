"""The mailbox-management parsers (parser/mailbox.py): typed results and what they refuse."""

from __future__ import annotations

import pytest

from postmesh.imap_gw.parser import ParseError, parse_command
from postmesh.imap_gw.parser.mailbox import (
    Create,
    Delete,
    GetQuota,
    GetQuotaRoot,
    Id,
    ListCmd,
    Rename,
    SetQuota,
    Subscribe,
    Unsubscribe,
)


def test_mailbox_commands() -> None:
    assert parse_command(b"a CREATE Work/2026") == Create("a", b"Work/2026")
    assert parse_command(b'a create "Sent Items" (USE (\\Sent))') == Create(
        "a", b"Sent Items", ("\\Sent",)
    )
    assert parse_command(b"a CREATE x (use ())") == Create("a", b"x", ())
    assert parse_command(b"a DELETE {3+}\r\nabc") == Delete("a", b"abc")
    assert parse_command(b'a RENAME old "new one"') == Rename("a", b"old", b"new one")
    assert parse_command(b"a SUBSCRIBE INBOX") == Subscribe("a", b"INBOX")
    assert parse_command(b"a UNSUBSCRIBE INBOX") == Unsubscribe("a", b"INBOX")


def test_list_extended_forms() -> None:
    cmd = parse_command(
        b'l LIST (SUBSCRIBED RECURSIVEMATCH) "" (INBOX "A/%") RETURN (CHILDREN STATUS (MESSAGES '
        b"size) special-use)"
    )
    assert cmd == ListCmd(
        "l",
        b"",
        (b"INBOX", b"A/%"),
        ("SUBSCRIBED", "RECURSIVEMATCH"),
        ("CHILDREN", "STATUS", "SPECIAL-USE"),
        ("MESSAGES", "SIZE"),
    )
    assert parse_command(b'l LIST "" * RETURN ()') == ListCmd("l", b"", (b"*",))


def test_id_and_quota_commands() -> None:
    assert parse_command(b"i ID NIL") == Id("i", None)
    assert parse_command(b'i ID ("name" "x" "os" nil)') == Id("i", (("name", "x"), ("os", None)))
    assert parse_command(b"i ID ()") == Id("i", ())
    assert parse_command(b'q GETQUOTA ""') == GetQuota("q", b"")
    assert parse_command(b"q GETQUOTAROOT INBOX") == GetQuotaRoot("q", b"INBOX")
    assert parse_command(b'q SETQUOTA "" (STORAGE 512 message 10)') == SetQuota(
        "q", b"", (("STORAGE", 512), ("MESSAGE", 10))
    )
    assert parse_command(b'q SETQUOTA "" ()') == SetQuota("q", b"", ())


@pytest.mark.parametrize(
    "raw",
    [
        b"a CREATE",
        b"a CREATE ",
        b"a CREATE x (USE)",
        b"a CREATE x (USE (Sent))",
        b"a CREATE x (USE (\\Sent)",
        b"a CREATE x (X (\\Sent))",
        b"a CREATE x ()",
        b"a DELETE",
        b"a DELETE x y",
        b"a RENAME x",
        b"a SUBSCRIBE",
        b"a UNSUBSCRIBE x y",
        b'a LIST "" * RETURN (STATUS)',
        b'a LIST "" * RETURN (STATUS ())',
        b'a LIST "" * RETURN CHILDREN',
        b'a LIST (SUBSCRIBED "" *',
        b"a ID",
        b'a ID ("a" "b"',
        b'a ID ("a")',
        b"a ID (a b)",
        b"a ID NILX",
        b"a GETQUOTA",
        b"a GETQUOTAROOT",
        b'a SETQUOTA "" (STORAGE)',
        b'a SETQUOTA "" (STORAGE -1)',
        b'a SETQUOTA "" STORAGE 1',
    ],
)
def test_bad_arguments(raw: bytes) -> None:
    with pytest.raises(ParseError) as exc:
        parse_command(raw)
    assert exc.value.tag == "a" and exc.value.message
