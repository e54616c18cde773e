"""The SMTP client and the per-domain relay against a scripted peer on loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from delivery_fakes import FakeResolver, FakeSmtp

from postmesh.api.events.v1 import events_pb2
from postmesh.delivery.dsn import build_dsn
from postmesh.delivery.model import Outcome
from postmesh.delivery.relay import Relay
from postmesh.delivery.settings import DeliverySettings
from postmesh.delivery.smtp_client import Envelope, Rcpt, SmtpSession

BODY = (
    b"From: a@example.test\r\nTo: b@remote.test\r\nSubject: dots\r\n\r\n"
    b".leading dot\r\n.\r\nmiddle\r\n..two dots\r\nlast line without dot\r\n"
)


def relay_for(peer: FakeSmtp, resolver: FakeResolver, **kw: Any) -> Relay:
    settings = DeliverySettings(
        smtp_port=peer.port, hostname="out.example.test", mta_sts=False, **kw
    )
    return Relay(settings, resolver, None)  # type: ignore[arg-type]


def remote_zone() -> FakeResolver:
    dns_ = FakeResolver()
    dns_.add("remote.test", "MX", "10 mx1.remote.test.", "20 mx2.remote.test.")
    dns_.add("mx1.remote.test", "A", "127.0.0.1")
    dns_.add("mx2.remote.test", "A", "127.0.0.1")
    return dns_


async def test_dot_stuffing_on_the_wire() -> None:
    peer = await FakeSmtp().start()
    s = SmtpSession("mx.test", "127.0.0.1", peer.port, "out.example.test", 5, 5)
    await s.open()
    replies = await s.send(Envelope("a@example.test"), [Rcpt("b@remote.test")], BODY)
    await s.close()
    await peer.stop()
    assert replies["b@remote.test"].code == 250
    [tx] = peer.transactions
    # RFC 5321 §4.5.2: every line starting with "." gets one more; the receiver strips it.
    assert tx.data.endswith(
        b"\r\n\r\n..leading dot\r\n..\r\nmiddle\r\n...two dots\r\nlast line without dot\r\n"
    )
    unstuffed = b"".join(
        line[1:] if line.startswith(b".") else line for line in tx.data.splitlines(keepends=True)
    )
    assert unstuffed == BODY


async def test_dsn_parameters_only_when_the_peer_has_dsn() -> None:
    env = Envelope("a@example.test", envid="ID+1", ret="HDRS")
    rcpt = Rcpt("b@remote.test", ("FAILURE", "DELAY"), "rfc822;b@remote.test")
    for exts, expect in ((("DSN", "8BITMIME"), True), (("8BITMIME",), False)):
        peer = await FakeSmtp(extensions=exts).start()
        s = SmtpSession("mx.test", "127.0.0.1", peer.port, "out.example.test", 5, 5)
        await s.open()
        await s.send(env, [rcpt], BODY)
        await s.close()
        await peer.stop()
        [tx] = peer.transactions
        assert (b"RET=HDRS ENVID=ID+2B1" in tx.mail) is expect
        assert (b"NOTIFY=FAILURE,DELAY ORCPT=rfc822;b@remote.test" in tx.rcpts[0]) is expect


async def test_8bit_and_smtputf8_to_a_peer_without_them() -> None:
    peer = await FakeSmtp(extensions=("SIZE 1000000",)).start()
    s = SmtpSession("mx.test", "127.0.0.1", peer.port, "out.example.test", 5, 5)
    await s.open()
    eight = BODY.replace(b"middle", "mitte \u00e4".encode())
    r = await s.send(Envelope("a@example.test", eight_bit=True), [Rcpt("b@remote.test")], eight)
    assert (r["b@remote.test"].code, r["b@remote.test"].status) == (554, "5.6.3")
    r = await s.send(Envelope("\u00e4@example.test", smtputf8=True), [Rcpt("b@remote.test")], BODY)
    assert (r["b@remote.test"].code, r["b@remote.test"].status) == (553, "5.6.7")
    # Declared 8BITMIME / SMTPUTF8 but all ASCII: sent without the parameters (RFC 6152 §3).
    r = await s.send(
        Envelope("a@example.test", eight_bit=True, smtputf8=True), [Rcpt("b@remote.test")], BODY
    )
    assert r["b@remote.test"].code == 250
    assert b"BODY=8BITMIME" not in peer.transactions[-1].mail
    assert b"SMTPUTF8" not in peer.transactions[-1].mail
    await s.close()
    await peer.stop()


async def test_relay_falls_back_to_the_next_mx_and_reuses_the_connection() -> None:
    peer = await FakeSmtp().start()
    dns_ = remote_zone()
    # The primary MX's address has nothing listening on the port: connection refused.
    dns_.add("mx1.remote.test", "A", "127.0.0.9")
    relay = relay_for(peer, dns_)
    env = Envelope("a@example.test")
    out = await relay.deliver("remote.test", env, [Rcpt("b@remote.test")], BODY)
    assert [(r.outcome, r.remote_mta) for r in out] == [(Outcome.RELAYED, "mx2.remote.test")]
    out = await relay.deliver("remote.test", env, [Rcpt("c@remote.test")], BODY)
    assert out[0].outcome is Outcome.RELAYED
    assert peer.connections == 1 and len(peer.transactions) == 2
    # The second transaction follows the first's final reply directly: no RSET probe.
    assert b"RSET\r\n" not in peer.commands
    await relay.cache.close_all()
    await peer.stop()


@pytest.mark.parametrize(
    "reply", [b"421 4.4.2 fake.test idle timeout\r\n", b""], ids=["421", "closed"]
)
async def test_a_reused_connection_the_peer_closed_is_replaced_before_anything_is_sent(
    reply: bytes,
) -> None:
    """RFC 5321 §3.8: a peer may close an idle connection (421, or just close) as the client
    reuses it. The MAIL then gets no usable reply, nothing of the message was sent, and the
    transaction runs on a new connection: relayed now, once, not deferred."""
    peer = await FakeSmtp(idle_close_after=1, idle_close_reply=reply).start()
    relay = relay_for(peer, remote_zone())
    env = Envelope("a@example.test")
    for rcpt in ("b@remote.test", "c@remote.test", "d@remote.test"):
        out = await relay.deliver("remote.test", env, [Rcpt(rcpt)], BODY)
        assert [r.outcome for r in out] == [Outcome.RELAYED]
    assert [t.rcpts for t in peer.transactions] == [
        [b"RCPT TO:<b@remote.test>\r\n"], [b"RCPT TO:<c@remote.test>\r\n"],
        [b"RCPT TO:<d@remote.test>\r\n"],
    ]  # fmt: skip
    assert peer.connections == 3  # each connection carried one transaction
    await relay.cache.close_all()
    await peer.stop()


async def test_a_new_connection_lost_at_mail_defers_as_before() -> None:
    """Only a reused connection is replaced: a new one that breaks at MAIL is the peer's
    failure, deferred (4.4.2) as any lost connection."""
    peer = await FakeSmtp(idle_close_after=0, idle_close_reply=b"").start()
    relay = relay_for(peer, remote_zone())
    out = await relay.deliver("remote.test", Envelope("a@x.test"), [Rcpt("b@remote.test")], BODY)
    assert [(r.outcome, r.status) for r in out] == [(Outcome.DEFERRED, "4.4.2")]
    assert peer.connections == 1 and peer.transactions == []
    await relay.cache.close_all()
    await peer.stop()


async def test_per_recipient_replies_become_relayed_deferred_bounced() -> None:
    peer = await FakeSmtp(
        rcpt_replies={
            "later@remote.test": b"451 4.2.0 try later\r\n",
            "gone@remote.test": b"550 5.1.1 no such user\r\n",
        }
    ).start()
    relay = relay_for(peer, remote_zone())
    rcpts = [Rcpt("ok@remote.test"), Rcpt("later@remote.test"), Rcpt("gone@remote.test")]
    out = await relay.deliver("remote.test", Envelope("a@example.test"), rcpts, BODY)
    got = {r.recipient: (r.outcome, r.reply_code, r.status, r.diagnostic) for r in out}
    assert got == {
        "ok@remote.test": (Outcome.RELAYED, "250", "2.0.0", "queued"),
        "later@remote.test": (Outcome.DEFERRED, "451", "4.2.0", "try later"),
        "gone@remote.test": (Outcome.BOUNCED, "550", "5.1.1", "no such user"),
    }
    await relay.cache.close_all()
    await peer.stop()


async def test_null_mx_bounces_5_1_10_and_dns_failure_defers() -> None:
    peer = await FakeSmtp().start()
    dns_ = remote_zone()
    dns_.add("nomail.test", "MX", "0 .")
    relay = relay_for(peer, dns_)
    [r] = await relay.deliver("nomail.test", Envelope("a@x.test"), [Rcpt("b@nomail.test")], BODY)
    assert (r.outcome, r.reply_code, r.status) == (Outcome.BOUNCED, "556", "5.1.10")
    [r] = await relay.deliver("nxdomain.test", Envelope("a@x.test"), [Rcpt("b@nx.test")], BODY)
    assert (r.outcome, r.status) == (Outcome.BOUNCED, "5.1.2")
    from delivery_fakes import timeout

    dns_.zone[("slow.test", "MX")] = timeout()
    [r] = await relay.deliver("slow.test", Envelope("a@x.test"), [Rcpt("b@slow.test")], BODY)
    assert (r.outcome, r.status) == (Outcome.DEFERRED, "4.4.3")
    assert peer.connections == 0
    await peer.stop()


async def test_unreachable_mx_hosts_defer_and_a_5xx_greeting_is_no_bounce() -> None:
    peer = await FakeSmtp(greeting=b"554 5.7.1 go away\r\n").start()
    relay = relay_for(peer, remote_zone())
    [r] = await relay.deliver("remote.test", Envelope("a@x.test"), [Rcpt("b@remote.test")], BODY)
    assert r.outcome is Outcome.DEFERRED and "go away" in r.diagnostic
    assert peer.connections == 2  # both MX hosts were tried
    await peer.stop()


@pytest.mark.parametrize(
    ("greeting", "code", "status"),
    [(b"421 4.7.0 too busy, try later", "421", "4.7.0"), (b"554 5.7.1 go away", "451", "4.4.1")],
    ids=["421", "554"],
)
async def test_a_refusing_greeting_names_the_server_in_remote_mta(
    greeting: bytes, code: str, status: str
) -> None:
    """A greeting the MX gives itself is a remote reply like any other (RFC 3464 §2.3.5,
    §2.3.6): the deferral names the host that gave it, and the report says Remote-MTA and
    ``smtp;`` with the reply as the host sent it. It once came out as a reply made here."""
    peer = await FakeSmtp(greeting=greeting + b"\r\n").start()
    relay = relay_for(peer, remote_zone())
    [r] = await relay.deliver("remote.test", Envelope("a@x.test"), [Rcpt("b@remote.test")], BODY)
    await peer.stop()
    assert (r.outcome, r.reply_code, r.status) == (Outcome.DEFERRED, code, status)
    # The last host tried gave the reply the sender sees.
    assert (r.remote_mta, r.remote_reply) == ("mx2.remote.test", greeting.decode())
    msg = events_pb2.InboundMessage(
        queue_id="Q1", mail_from="a@x.test",
        recipients=[events_pb2.Recipient(address="b@remote.test")],
    )  # fmt: skip
    report = build_dsn(msg, [r], BODY, "out.example.test").inline_content.decode()
    assert "Remote-MTA: dns; mx2.remote.test" in report
    assert f"Diagnostic-Code: smtp; {greeting.decode()}" in report


async def test_a_host_that_cannot_be_reached_is_no_remote_mta() -> None:
    """Nothing listens: no host said anything, so the report names none."""
    peer = await FakeSmtp().start()
    dns_ = FakeResolver()
    dns_.add("remote.test", "MX", "10 mx1.remote.test.")
    dns_.add("mx1.remote.test", "A", "127.0.0.9")
    relay = relay_for(peer, dns_)
    [r] = await relay.deliver("remote.test", Envelope("a@x.test"), [Rcpt("b@remote.test")], BODY)
    await peer.stop()
    assert (r.outcome, r.status, r.remote_mta, r.remote_reply) == (
        Outcome.DEFERRED, "4.4.1", "", ""
    )  # fmt: skip
    assert "connection to mx1.remote.test[127.0.0.9]" in r.diagnostic


async def test_concurrency_per_destination_is_capped() -> None:
    peer = await FakeSmtp().start()
    relay = relay_for(peer, remote_zone(), destination_concurrency=2)
    env = Envelope("a@example.test")
    await asyncio.gather(
        *(relay.deliver("remote.test", env, [Rcpt(f"u{i}@remote.test")], BODY) for i in range(6))
    )
    assert len(peer.transactions) == 6
    assert peer.connections <= 2
    await relay.cache.close_all()
    await peer.stop()


async def test_relayed_to_a_peer_without_dsn_is_marked_for_a_relayed_notice() -> None:
    for exts, expect in ((("8BITMIME",), True), (("8BITMIME", "DSN"), False)):
        peer = await FakeSmtp(extensions=exts).start()
        relay = relay_for(peer, remote_zone())
        rcpt = Rcpt("b@remote.test", ("SUCCESS",))
        [r] = await relay.deliver("remote.test", Envelope("a@example.test"), [rcpt], BODY)
        assert r.outcome is Outcome.RELAYED and r.relayed_without_dsn is expect
        await relay.cache.close_all()
        await peer.stop()
