"""PIPELINING (RFC 2920) in the outbound client, and the reply reader it runs on (wire.py),
against the scripted peer on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from delivery_fakes import FakeSmtp, tls_pair

from postmesh.delivery.smtp_client import Envelope, Rcpt, SmtpSession
from postmesh.delivery.wire import Wire

BODY = b"From: a@x.test\r\nSubject: p\r\n\r\n.leading dot\r\nline\r\n"


async def session(peer: FakeSmtp) -> SmtpSession:
    s = SmtpSession("mx.test", "127.0.0.1", peer.port, "out.example.test", 5, 5)
    await s.open()
    return s


async def test_mail_rcpt_and_data_go_as_one_group() -> None:
    """The peer answers nothing before DATA arrives: only a pipelining client gets through.
    Per-recipient replies stay matched to their recipients, and the dots are stuffed."""
    peer = await FakeSmtp(
        pipelining=True, replies_at_data=True,
        rcpt_replies={"gone@remote.test": b"550 5.1.1 no such user\r\n"},
    ).start()  # fmt: skip
    s = await session(peer)
    rcpts = [Rcpt("b@remote.test"), Rcpt("gone@remote.test"), Rcpt("c@remote.test")]
    for _ in range(2):  # and again on the same connection: the replies stay in step
        replies = await s.send(Envelope("a@x.test"), rcpts, BODY)
        assert {a: (r.code, r.status) for a, r in replies.items()} == {
            "b@remote.test": (250, "2.0.0"),
            "gone@remote.test": (550, "5.1.1"),
            "c@remote.test": (250, "2.0.0"),
        }
    await s.close()
    await peer.stop()
    assert len(peer.transactions) == 2 and peer.connections == 1
    assert peer.transactions[0].data.endswith(b"\r\n\r\n..leading dot\r\nline\r\n")
    assert b"RSET\r\n" not in peer.commands


async def test_without_pipelining_the_client_waits_for_each_reply() -> None:
    peer = await FakeSmtp().start()
    s = await session(peer)
    replies = await s.send(Envelope("a@x.test"), [Rcpt("b@remote.test")], BODY)
    await s.close()
    await peer.stop()
    assert replies["b@remote.test"].code == 250
    assert [c[:4] for c in peer.commands] == [b"EHLO", b"MAIL", b"RCPT", b"DATA", b"QUIT"]


@pytest.mark.parametrize("mail_reply", [b"451 4.3.0 later\r\n", b"550 5.7.1 not you\r\n"])
async def test_a_refused_mail_in_a_group_reads_the_rest_and_the_next_transaction_works(
    mail_reply: bytes,
) -> None:
    peer = await FakeSmtp(pipelining=True, mail_reply=mail_reply).start()
    s = await session(peer)
    rcpts = [Rcpt("b@remote.test"), Rcpt("c@remote.test")]
    replies = await s.send(Envelope("a@x.test"), rcpts, BODY)
    code = int(mail_reply[:3])
    assert [r.code for r in replies.values()] == [code, code]
    assert peer.transactions == []
    peer.mail_reply = b"250 2.1.0 ok\r\n"
    replies = await s.send(Envelope("a@x.test"), rcpts, BODY)
    assert [r.code for r in replies.values()] == [250, 250]
    await s.close()
    await peer.stop()
    assert len(peer.transactions) == 1 and peer.connections == 1


@pytest.mark.parametrize("data_without_rcpt", [False, True], ids=["554", "354"])
async def test_no_recipient_accepted_ends_the_group_and_sends_nothing(
    data_without_rcpt: bool,
) -> None:
    """Every RCPT refused: DATA's reply is 554, or (a server that took DATA anyway) 354, and
    then the end-of-data line alone is sent (RFC 2920 §3.1); no content leaves either way."""
    peer = await FakeSmtp(
        pipelining=True, data_without_rcpt=data_without_rcpt,
        rcpt_replies={"gone@remote.test": b"550 5.1.1 no such user\r\n"},
    ).start()  # fmt: skip
    s = await session(peer)
    replies = await s.send(Envelope("a@x.test"), [Rcpt("gone@remote.test")], BODY)
    assert (replies["gone@remote.test"].code, replies["gone@remote.test"].status) == (
        550,
        "5.1.1",
    )
    replies = await s.send(Envelope("a@x.test"), [Rcpt("b@remote.test")], BODY)
    assert replies["b@remote.test"].code == 250
    await s.close()
    await peer.stop()
    [tx] = peer.transactions
    assert tx.rcpts == [b"RCPT TO:<b@remote.test>\r\n"] and b"leading dot" in tx.data
    assert peer.connections == 1


async def test_a_control_character_never_reaches_the_wire() -> None:
    peer = await FakeSmtp(pipelining=True).start()
    s = await session(peer)
    replies = await s.send(
        Envelope("a@x.test"), [Rcpt("b@remote.test\r\nRSET"), Rcpt("c@remote.test")], BODY
    )
    assert replies["b@remote.test\r\nRSET"].status == "5.1.3"
    assert replies["c@remote.test"].code == 250
    bad = await s.send(Envelope("a@x.test\rDATA"), [Rcpt("c@remote.test")], BODY)
    assert bad["c@remote.test"].status == "5.1.7"
    await s.close()
    await peer.stop()
    assert all(b"RSET" not in c for c in peer.commands)
    assert len(peer.transactions) == 1


@pytest.mark.parametrize(
    "reply", [b"421 4.4.2 fake.test idle timeout\r\n", b""], ids=["421", "closed"]
)
async def test_a_reused_connection_closed_by_the_peer_is_replaced(reply: bytes) -> None:
    """ADR 47's reconnection holds with a pipelined group: the group's MAIL gets 421 or
    nothing, and the transaction runs once on a new connection."""
    peer = await FakeSmtp(pipelining=True, idle_close_after=1, idle_close_reply=reply).start()
    s = await session(peer)
    for rcpt in ("b@remote.test", "c@remote.test"):
        replies = await s.send(Envelope("a@x.test"), [Rcpt(rcpt)], BODY)
        assert replies[rcpt].code == 250
    await s.close()
    await peer.stop()
    assert [t.rcpts for t in peer.transactions] == [
        [b"RCPT TO:<b@remote.test>\r\n"], [b"RCPT TO:<c@remote.test>\r\n"],
    ]  # fmt: skip
    assert peer.connections == 2


async def test_pipelined_group_after_starttls(tmp_path: Path) -> None:
    """The reply reader takes over the TLS transport (RFC 3207): the group goes encrypted."""
    server, _ = tls_pair(tmp_path, "mx.test")
    peer = await FakeSmtp(tls=server, pipelining=True, replies_at_data=True).start()
    s = await session(peer)
    assert s.tls
    replies = await s.send(Envelope("a@x.test"), [Rcpt("b@remote.test")], BODY)
    await s.close()
    await peer.stop()
    assert replies["b@remote.test"].code == 250
    [tx] = peer.transactions
    assert tx.tls and peer.tls_sessions == 1


async def test_8bit_to_a_pipelining_peer_without_8bitmime_is_returned_unsent() -> None:
    peer = await FakeSmtp(pipelining=True, extensions=("SIZE 1000000",)).start()
    s = await session(peer)
    eight = BODY.replace(b"line", "l\u00e4ne".encode())
    r = await s.send(Envelope("a@x.test", eight_bit=True), [Rcpt("b@remote.test")], eight)
    assert (r["b@remote.test"].code, r["b@remote.test"].status) == (554, "5.6.3")
    r = await s.send(Envelope("\u00e4@x.test", smtputf8=True), [Rcpt("b@remote.test")], BODY)
    assert (r["b@remote.test"].code, r["b@remote.test"].status) == (553, "5.6.7")
    await s.close()
    await peer.stop()
    assert peer.transactions == [] and not any(c.startswith(b"MAIL") for c in peer.commands)


# The reply reader alone, fed as a transport would feed it.


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol


async def test_replies_split_and_joined_across_reads_come_out_whole_and_in_order() -> None:
    wire = Wire.take_over(Transport(), 1)
    wire.data_received(b"250 2.1.0 ok\r\n250-first\r\n250-sec")
    wire.data_received(b"ond\r\n250 last\r\n354 go")
    first = await wire.reply()
    second = await wire.reply()
    assert (first.code, first.message) == (250, "2.1.0 ok")
    assert (second.code, second.message) == (250, "first\nsecond\nlast")
    pending = asyncio.ensure_future(wire.reply())
    await asyncio.sleep(0)
    assert not pending.done()
    wire.data_received(b" ahead\r\n")
    assert (await pending).code == 354


async def test_replies_before_a_close_are_read_then_the_close_is_raised() -> None:
    wire = Wire.take_over(Transport(), 1)
    wire.data_received(b"421 4.4.2 closing\r\n")
    wire.eof_received()
    assert (await wire.reply()).code == 421
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await wire.reply()
    assert not wire.connected
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        wire.write(b"RSET\r\n")


async def test_malformed_or_endless_replies_end_the_connection() -> None:
    transport = Transport()
    wire = Wire.take_over(transport, 1)
    wire.data_received(b"hello there\r\n")
    with pytest.raises(aiosmtplib.SMTPResponseException, match="Malformed"):
        await wire.reply()
    assert transport.closed
    wire = Wire.take_over(Transport(), 1)
    wire.data_received(b"250-" + b"x" * 9000)
    with pytest.raises(aiosmtplib.SMTPResponseException, match="too long"):
        await wire.reply()


async def test_no_reply_in_time_closes_the_connection() -> None:
    transport = Transport()
    wire = Wire.take_over(transport, 0.05)
    with pytest.raises(aiosmtplib.SMTPReadTimeoutError):
        await wire.reply()
    assert transport.closed and not wire.connected
