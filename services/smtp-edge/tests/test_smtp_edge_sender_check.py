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
    # A second From field is checked like the first (it once made the check skip both).
    for authors in (
        "alice@example.org\r\nFrom: ceo@bank.example",
        "ceo@bank.example\r\nFrom: alice@example.org",
    ):
        _, data = await asyncio.to_thread(submit, edge.submission, "alice@example.org", authors)
        assert data[0] == 553 and b"<ceo@bank.example>" in data[1]
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


def submit_many(port: int, rounds: list[tuple[str, str]]) -> list[tuple[int, int]]:
    """One logged-in session, one message per (sender, recipient): (MAIL, DATA) codes."""
    out = []
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("client.test")
        s.login("alice@example.org", "wonderland")
        for sender, rcpt in rounds:
            mail = s.mail(sender)[0]
            if mail != 250:
                s.rset()
                out.append((mail, 0))
                continue
            assert s.rcpt(rcpt)[0] == 250
            msg = f"From: {sender}\r\nTo: {rcpt}\r\nSubject: s\r\n\r\nhi\r\n".encode()
            out.append((mail, s.data(msg)[0]))
    return out


async def test_a_session_reuses_its_sender_and_remote_domain_answers(edge: Edge) -> None:
    """ADR 53: the next messages of one authenticated session ask auth neither who owns the
    sender it was just allowed nor about a domain it was just told is remote."""
    edge.backend.owner_lookups.clear()
    edge.backend.resolved.clear()
    rounds = [
        ("alice@example.org", "dave@elsewhere.example"),
        ("alice@example.org", "erin@elsewhere.example"),
        ("bob@example.org", "dave@elsewhere.example"),  # refused: asked again each time
        ("bob@example.org", "dave@elsewhere.example"),
        ("alice@example.org", "frank@other.example"),
    ]
    got = await asyncio.to_thread(submit_many, edge.submission, rounds)
    assert got == [(250, 250), (250, 250), (553, 0), (553, 0), (250, 250)]
    assert edge.backend.owner_lookups == [
        "alice@example.org", "bob@example.org", "bob@example.org",
    ]  # fmt: skip
    assert edge.backend.resolved == ["dave@elsewhere.example", "frank@other.example"]
    assert len(await edge.messages(3)) == 3
    # A new session asks again.
    edge.backend.owner_lookups.clear()
    edge.backend.resolved.clear()
    await asyncio.to_thread(
        submit_many, edge.submission, [("alice@example.org", "dave@elsewhere.example")]
    )
    assert edge.backend.owner_lookups == ["alice@example.org"]
    assert edge.backend.resolved == ["dave@elsewhere.example"]


async def test_without_the_cache_every_message_asks(make_edge: EdgeFactory) -> None:
    edge = await make_edge(smtp_recipient_cache_seconds=0)
    rounds = [("alice@example.org", "dave@elsewhere.example")] * 2
    got = await asyncio.to_thread(submit_many, edge.submission, rounds)
    assert got == [(250, 250), (250, 250)]
    assert edge.backend.owner_lookups == ["alice@example.org"] * 2
    assert edge.backend.resolved == ["dave@elsewhere.example"] * 2


async def test_the_mx_never_reuses_a_remote_answer(edge: Edge) -> None:
    """Unauthenticated, "remote" means "relay access denied": asked every time, so a domain
    just made local is accepted at once (ADR 43)."""

    def relay_twice(port: int) -> list[int]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
            s.ehlo("client.test")
            codes = []
            for _ in range(2):
                s.mail("someone@sender.example")
                codes.append(s.rcpt("dave@elsewhere.example")[0])
                s.rset()
            return codes

    edge.backend.resolved.clear()
    assert await asyncio.to_thread(relay_twice, edge.mx) == [554, 554]
    assert edge.backend.resolved == ["dave@elsewhere.example"] * 2


def test_session_answers_expire_and_are_bounded() -> None:
    from postmesh.smtp_edge.session_answers import KEPT, SessionAnswers

    now = [100.0]
    answers = SessionAnswers(5.0, clock=lambda: now[0])
    answers.remember_owner("Alice@example.org", "Sales@Example.org")
    answers.remember_remote("dave@Elsewhere.example")
    assert answers.owns("alice@example.org", "sales@example.org")
    assert not answers.owns("bob@example.org", "sales@example.org")  # another user's
    assert answers.remote("erin@elsewhere.EXAMPLE") and not answers.remote("x@other.example")
    now[0] += 5.0
    assert not answers.owns("alice@example.org", "sales@example.org")
    assert not answers.remote("dave@elsewhere.example")
    for i in range(KEPT + 1):
        answers.remember_remote(f"x@d{i}.example")
    assert not answers.remote("x@d0.example") and answers.remote(f"x@d{KEPT}.example")
    off = SessionAnswers(0.0)
    off.remember_remote("dave@elsewhere.example")
    assert not off.remote("dave@elsewhere.example")
