"""Submission over the wire: the envelope sender and the From addresses must belong to the
authenticated user or be an alias of theirs (553 5.7.1 otherwise)."""

from __future__ import annotations

import asyncio
import smtplib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import Edge, EdgeFactory


def submit(port: int, sender: str, author: str) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
    msg = f"From: {author}\r\nTo: dave@elsewhere.example\r\nSubject: s\r\n\r\nhi\r\n".encode()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("client.test")
        s.login("alice@example.org", "wonderland")
        mail = s.mail(sender)
        if mail[0] != 250:
            return mail, (0, b"")
        s.rcpt("dave@elsewhere.example")
        return mail, s.data(msg)


async def test_own_address_and_alias_are_accepted(edge: Edge) -> None:
    for sender, author in [
        ("alice@example.org", "Alice <Alice@Example.org>"),
        ("sales@example.org", "Sales <sales@example.org>"),
        ("", "alice@example.org"),  # the null sender is not an identity
    ]:
        mail, data = await asyncio.to_thread(submit, edge.submission, sender, author)
        assert mail == (250, b"2.1.0 Ok"), sender
        assert data[0] == 250, (sender, data)
    assert len(await edge.messages(3)) == 3


async def test_from_equal_to_the_checked_envelope_sender_is_not_looked_up_again(
    edge: Edge,
) -> None:
    edge.backend.owner_lookups.clear()
    mail, data = await asyncio.to_thread(
        submit, edge.submission, "alice@example.org", "alice@example.org"
    )
    assert (mail[0], data[0]) == (250, 250)
    assert edge.backend.owner_lookups == ["alice@example.org"]  # at MAIL only
    edge.backend.owner_lookups.clear()
    _, data = await asyncio.to_thread(
        submit, edge.submission, "alice@example.org", "Sales <sales@example.org>"
    )
    assert data[0] == 250
    assert edge.backend.owner_lookups == ["alice@example.org", "sales@example.org"]


async def test_someone_elses_envelope_sender_is_refused(edge: Edge) -> None:
    mail, _ = await asyncio.to_thread(
        submit, edge.submission, "bob@example.org", "alice@example.org"
    )
    assert mail == (
        553,
        b"5.7.1 <bob@example.org>: Sender address rejected: not owned by user alice@example.org",
    )
    mail, _ = await asyncio.to_thread(submit, edge.submission, "ceo@bank.example", "x@y.example")
    assert mail[0] == 553


async def test_someone_elses_from_header_is_refused(edge: Edge) -> None:
    _, data = await asyncio.to_thread(
        submit, edge.submission, "alice@example.org", "The Bank <ceo@bank.example>"
    )
    assert data == (
        553,
        b"5.7.1 <ceo@bank.example>: Sender address rejected: not owned by user alice@example.org",
    )
    _, data = await asyncio.to_thread(
        submit, edge.submission, "alice@example.org", "alice@example.org, bob@example.org"
    )
    assert data[0] == 553
    assert await edge.records(0) == []


async def test_lookup_failure_is_temporary(edge: Edge) -> None:
    def run() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", edge.submission, timeout=10) as s:
            s.login("alice@example.org", "wonderland")
            edge.backend.auth_down = True
            return s.mail("alice@example.org")

    assert await asyncio.to_thread(run) == (
        451,
        b"4.3.0 <alice@example.org>: Temporary lookup failure",
    )


async def test_check_can_be_turned_off(make_edge: EdgeFactory) -> None:
    edge = await make_edge(smtp_sender_login_check=False)
    mail, data = await asyncio.to_thread(
        submit, edge.submission, "bob@example.org", "ceo@bank.example"
    )
    assert mail[0] == 250 and data[0] == 250
