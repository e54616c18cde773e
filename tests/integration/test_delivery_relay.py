"""Remote delivery against real peers on loopback: dnsmasq serves the test zones (MX, null MX,
A), Postfix is the remote MX delivering into a Maildir, and smtp-sink answers 4xx or 5xx. The
delivery service finds them through POSTMESH_DNS_SERVERS and one remote port (POSTMESH_SMTP_PORT)
shared by every peer on its own 127.0.0.x, so no privileged port 25 is needed."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import re
import signal
import smtplib
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dkim
import dns.resolver
import pytest

from postmesh.api.store.v1 import queue_pb2, queue_pb2_grpc
from postmesh.common.devstack import Stack
from postmesh.common.dns import make_resolver
from postmesh.common.grpc import channel
from postmesh.delivery.mta_sts import MtaSts
from tests.integration.infra import FerretDB, KafkaBroker
from tests.integration.infra.dnsmasq import Dnsmasq, Zone, free_udp_tcp_port
from tests.integration.infra.opendkim import opendkim_verify
from tests.integration.infra.postfix_peer import PostfixPeer, SmtpSink, free_port_on
from tests.integration.stack import (
    distributed_env,
    embedded_env,
    free_stack_ports,
    ops_metric,
    quick_env,
    wait_for,
)
from tests.integration.test_mail_end_to_end import create_user, imap_fetch_all, insecure_tls

SINK_5XX = "127.0.0.3"  # MX of fail.test
SINK_4XX = "127.0.0.4"  # MX of later.test
NOTHING = "127.0.0.5"  # an MX address where nothing listens

ZONE = Zone(
    mx=[
        ("ok.test", "mx.ok.test", 10),
        ("slow.test", "mx.ok.test", 10),
        # The preferred MX is down: delivery falls back to the next one (RFC 5321 §5.1).
        ("fallback.test", "mx1.fallback.test", 10),
        ("fallback.test", "mx.ok.test", 20),
        ("fail.test", "mx.fail.test", 10),
        ("later.test", "mx.later.test", 10),
        ("nomx.test", ".", 0),  # RFC 7505 null MX
        # Postfix is its MX and refuses every RCPT (550 5.1.1).
        ("norelay.test", "mx.ok.test", 10),
    ],
    a=[
        ("mx.ok.test", "127.0.0.1"),
        ("mx1.fallback.test", NOTHING),
        ("mx.fail.test", SINK_5XX),
        ("mx.later.test", SINK_4XX),
    ],
)


class Peers:
    def __init__(self, dns: Dnsmasq, port: int, postfix: PostfixPeer) -> None:
        self.dns, self.port, self.postfix = dns, port, postfix


@pytest.fixture(scope="module")
def peers(
    dnsmasq: Callable[[Zone], Dnsmasq], postfix_peer: Callable[..., PostfixPeer]
) -> Iterator[Peers]:
    port = free_port_on("127.0.0.1", SINK_5XX, SINK_4XX, NOTHING)
    dns = dnsmasq(ZONE)
    postfix = postfix_peer(
        port, ["ok.test", "fallback.test"], slow_domains=("slow.test",),
        refused_domains=("norelay.test",),
    )  # fmt: skip
    with SmtpSink(SINK_5XX, port, hard=("RCPT",), hard_reply="550 5.1.1 no such user here"):
        yield Peers(dns, port, postfix)


@pytest.fixture(scope="module")
def relay_stack(tmp_path_factory: pytest.TempPathFactory, peers: Peers) -> Iterator[Stack]:
    env = {
        **quick_env(),
        **embedded_env(),
        "POSTMESH_DNS_SERVERS": peers.dns.servers,
        "POSTMESH_SMTP_PORT": str(peers.port),
        "POSTMESH_RETRY_SCHEDULE": "1s",
        "POSTMESH_QUEUE_POLL_SECONDS": "0.2",
        # A killed replica's leases come back soon (the SIGKILL test).
        "POSTMESH_QUEUE_LEASE_SECONDS": "3",
        "POSTMESH_RELAY_CONNECT_TIMEOUT_SECONDS": "3",
        "POSTMESH_HOSTNAME": "out.example.test",
    }
    stack = Stack(Path(tmp_path_factory.mktemp("relay")), free_stack_ports(), env)
    stack.start(timeout=90)
    yield stack
    for svc in ("delivery",):
        print(f"----- {svc} log tail -----\n{stack.log_tail(svc, 60)}")
    stack.stop()


def message(sender: str, rcpts: list[str], marker: str) -> bytes:
    lines = [
        f"From: <{sender}>",
        f"To: {', '.join(f'<{r}>' for r in rcpts)}",
        f"Subject: relay {marker}",
        f"Message-ID: <{marker}@example.test>",
        "Date: Fri, 04 Dec 2026 21:00:00 +0000",
        "",
        "first line",
        ".a line that starts with a dot",
        ".",
        "..two dots",
        "last line",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def submit(stack: Stack, sender: str, password: str, rcpts: list[str], msg: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_submission, timeout=30) as smtp:
        smtp.starttls(context=insecure_tls())
        smtp.login(sender, password)
        assert smtp.sendmail(sender, rcpts, msg) == {}


def new_sender(stack: Stack) -> tuple[str, str]:
    address = f"sender-{uuid.uuid4().hex[:8]}@example.test"
    create_user(stack, address, "relay-pw-1")
    return address, "relay-pw-1"


def arrived(postfix: PostfixPeer, marker: str) -> list[bytes]:
    return [m for m in postfix.messages() if f"relay {marker}".encode() in m]


def queue_entries(stack: Stack) -> list[queue_pb2.QueueEntry]:
    async def run() -> list[queue_pb2.QueueEntry]:
        ch = channel(stack.grpc_target("store"), stack.grpc_security("delivery"), "store")
        stub = queue_pb2_grpc.DeliveryQueueServiceStub(ch)
        resp = await stub.List(queue_pb2.ListQueueRequest(page_size=1000), timeout=10)
        await ch.close()
        return list(resp.entries)

    return asyncio.run(run())


def reports(stack: Stack, sender: str, password: str) -> list[email.message.EmailMessage]:
    out = []
    for raw in imap_fetch_all(stack, sender, password):
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        out.append(parsed)
    return out


def test_relayed_to_postfix_byte_for_byte_with_mx_fallback(
    relay_stack: Stack, peers: Peers
) -> None:
    sender, pw = new_sender(relay_stack)
    marker = uuid.uuid4().hex[:10]
    rcpts = ["alice@ok.test", "bob@fallback.test"]
    original = message(sender, rcpts, marker)
    submit(relay_stack, sender, pw, rcpts, original)
    got = wait_for(
        lambda: ((m := arrived(peers.postfix, marker)) and len(m) == 2 and m) or None,
        timeout=60, what="both copies in the Postfix Maildir",
    )  # fmt: skip
    delivered_to = sorted(m.split(b"Delivered-To: ")[1].split(b"\n")[0] for m in got)
    assert delivered_to == [b"alice@ok.test", b"bob@fallback.test"]
    for m in got:
        # Maildir lines end in LF; the rest is exactly what was submitted, dot lines included
        # (dot-stuffed on the wire by us, unstuffed by Postfix).
        assert m.endswith(original.replace(b"\r\n", b"\n"))
        assert b"\n.a line that starts with a dot\n.\n..two dots\n" in m
    assert reports(relay_stack, sender, pw) == []  # no bounce


def _alias(stack: Stack, targets: list[str]) -> str:
    alias = f"fwd-{uuid.uuid4().hex[:8]}@example.test"
    req = urllib.request.Request(
        f"http://127.0.0.1:{stack.ports.admin}/api/v1/aliases",
        data=json.dumps({"address": alias, "targets": targets}).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {stack.admin_token()}",
        },
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 201
    return alias


def test_alias_forward_is_relayed_and_its_local_target_delivered(
    relay_stack: Stack, peers: Peers
) -> None:
    """An alias with a local user and a remote address (docs/adr/0022): one copy each."""
    sender, pw = new_sender(relay_stack)
    local = f"local-{uuid.uuid4().hex[:8]}@example.test"
    create_user(relay_stack, local, "alias-pw-1")
    alias = _alias(relay_stack, [local, "Carol@ok.test"])
    marker = uuid.uuid4().hex[:10]
    submit(relay_stack, sender, pw, [alias], message(sender, [alias], marker))
    [relayed] = wait_for(
        lambda: arrived(peers.postfix, marker) or None, timeout=60, what="the forward at Postfix"
    )
    # The remote local part goes out as the alias wrote it (RFC 5321 §2.4: only its host
    # interprets it).
    assert b"X-Original-To: Carol@ok.test" in relayed
    [kept] = wait_for(
        lambda: (
            [m for m in imap_fetch_all(relay_stack, local, "alias-pw-1") if marker.encode() in m]
            or None
        ),
        what="the local copy",
    )
    assert f"relay {marker}".encode() in kept
    assert reports(relay_stack, sender, pw) == []  # no bounce
    assert len(arrived(peers.postfix, marker)) == 1


def test_a_forward_that_bounces_follows_the_aliass_notify_and_orcpt(relay_stack: Stack) -> None:
    """RFC 3461 §6.2.7.3: the forward target takes the DSN parameters given for the alias.
    NOTIFY=NEVER once still bounced, and the bounce lacked the ORCPT the client gave."""
    sender, pw = new_sender(relay_stack)
    alias = _alias(relay_stack, ["nobody@fail.test"])
    with smtplib.SMTP("127.0.0.1", relay_stack.ports.smtp_submission, timeout=30) as smtp:
        smtp.starttls(context=insecure_tls())
        smtp.login(sender, pw)
        quiet, loud = uuid.uuid4().hex[:10], uuid.uuid4().hex[:10]
        for marker, options in (
            (quiet, ["NOTIFY=NEVER"]),
            (loud, ["NOTIFY=FAILURE", "ORCPT=rfc822;given@orig.test"]),
        ):
            msg = message(sender, [alias], marker)
            assert smtp.sendmail(sender, [alias], msg, rcpt_options=options) == {}
    [dsn] = wait_for(lambda: reports(relay_stack, sender, pw) or None, 60, "the bounce")
    _human, status, returned = dsn.iter_parts()
    text = status.as_string().replace("\n ", " ")
    assert "Final-Recipient: rfc822; nobody@fail.test" in text, text
    assert "Original-Recipient: rfc822; given@orig.test" in text, text
    assert f"relay {loud}".encode() in returned.as_bytes()
    time.sleep(2)  # the NOTIFY=NEVER message was sent first: no report of it came, nor comes
    assert len(reports(relay_stack, sender, pw)) == 1


def test_5xx_reply_bounces_to_the_senders_inbox(relay_stack: Stack) -> None:
    sender, pw = new_sender(relay_stack)
    marker = uuid.uuid4().hex[:10]
    submit(relay_stack, sender, pw, ["nobody@fail.test"], message(sender, ["x"], marker))
    [dsn] = wait_for(lambda: reports(relay_stack, sender, pw) or None, 60, "the bounce")
    assert dsn.get_content_type() == "multipart/report"
    assert dsn["From"].addresses[0].username == "MAILER-DAEMON"
    _human, status, returned = dsn.iter_parts()
    text = status.as_string().replace("\n ", " ")
    for line in (
        "Reporting-MTA: dns; out.example.test",
        "Final-Recipient: rfc822; nobody@fail.test",
        "Action: failed",
        "Status: 5.1.1",
        "Remote-MTA: dns; mx.fail.test",
        "Diagnostic-Code: smtp; 550 5.1.1 no such user here",
    ):
        assert line in text, text
    assert f"relay {marker}".encode() in returned.as_bytes()
    assert [
        e for e in queue_entries(relay_stack) if e.recipient.address == "nobody@fail.test"
    ] == []


def test_pipelined_group_refused_by_postfix_bounces_and_the_connection_goes_on(
    relay_stack: Stack, peers: Peers
) -> None:
    """ADR 53: Postfix offers PIPELINING, so MAIL, both RCPTs and DATA go as one group; it
    refuses both RCPTs (550 5.1.1) and DATA (no valid recipients). Each
    recipient bounces with its own reply, and the next message to the same MX is relayed."""
    sender, pw = new_sender(relay_stack)
    marker = uuid.uuid4().hex[:10]
    rcpts = ["one@norelay.test", "two@norelay.test"]
    submit(relay_stack, sender, pw, rcpts, message(sender, rcpts, marker))
    [dsn] = wait_for(lambda: reports(relay_stack, sender, pw) or None, 60, "the bounce")
    text = list(dsn.iter_parts())[1].as_string().replace("\n ", " ")
    for rcpt in rcpts:
        assert f"Final-Recipient: rfc822; {rcpt}" in text, text
    assert text.count("Status: 5.1.1") == 2 and "no such user here" in text, text
    assert "Remote-MTA: dns; mx.ok.test" in text
    assert arrived(peers.postfix, marker) == []
    after = uuid.uuid4().hex[:10]
    submit(relay_stack, sender, pw, ["bob@ok.test"], message(sender, ["bob@ok.test"], after))
    wait_for(lambda: arrived(peers.postfix, after) or None, 60, "the next message")


def test_null_mx_bounces_at_once_with_5_1_10(relay_stack: Stack) -> None:
    sender, pw = new_sender(relay_stack)
    marker = uuid.uuid4().hex[:10]
    submit(relay_stack, sender, pw, ["someone@nomx.test"], message(sender, ["x"], marker))
    [dsn] = wait_for(lambda: reports(relay_stack, sender, pw) or None, 60, "the bounce")
    status = list(dsn.iter_parts())[1].as_string()
    assert "Final-Recipient: rfc822; someone@nomx.test" in status
    assert "Status: 5.1.10" in status and "null MX" in status


def test_no_mta_sts_policy_is_asked_of_the_dns_once(peers: Peers) -> None:
    """RFC 8461 §5.1 over real DNS: _mta-sts.<domain> is NXDOMAIN (dnsmasq), so the domain has
    no policy, and that answer is reused for its negative TTL (no SOA here: 300 s) instead of
    being asked again per message, even by a resolver without a cache of its own. A look-up
    that fails (no DNS server answering) is not remembered."""

    def txt_queries(name: str) -> int:
        return peers.dns.log_path.read_text().count(f"query[TXT] _mta-sts.{name} ")

    async def run() -> None:
        sts = MtaSts(make_resolver(peers.dns.servers))  # no resolver cache at all
        for _ in range(5):
            assert await sts.policy("nosts.ok.test") is None
        assert "nosts.ok.test" in sts.absent
        down = MtaSts(make_resolver(f"127.0.0.1:{free_udp_tcp_port()}", timeout_seconds=0.5))
        assert await down.policy("ok.test") is None and len(down.absent) == 0

    asyncio.run(run())
    assert txt_queries("nosts.ok.test") == 1


def test_4xx_is_deferred_then_delivered_on_retry(relay_stack: Stack, peers: Peers) -> None:
    sender, pw = new_sender(relay_stack)
    marker = uuid.uuid4().hex[:10]
    with SmtpSink(SINK_4XX, peers.port, soft=("RCPT",), soft_reply="451 4.3.0 come back later"):
        submit(relay_stack, sender, pw, ["carol@later.test"], message(sender, ["x"], marker))
        entry = wait_for(
            lambda: next(
                (e for e in queue_entries(relay_stack)
                 if e.recipient.address == "carol@later.test" and e.attempts >= 1),
                None,
            ),
            60, "a deferred queue entry",
        )  # fmt: skip
        assert "451 4.3.0 come back later" in entry.last_error
    with SmtpSink(SINK_4XX, peers.port, dump=True) as accepting:
        wait_for(
            lambda: any(f"relay {marker}".encode() in d for d in accepting.dumped()) or None,
            60, "the retried message at the peer",
        )  # fmt: skip
        wait_for(
            lambda: not any(e.recipient.address == "carol@later.test"
                            for e in queue_entries(relay_stack)) or None,
            30, "the entry to leave the queue",
        )  # fmt: skip
    assert reports(relay_stack, sender, pw) == []  # a deferral sends no bounce


def test_one_delay_notice_over_the_wire_across_retries_and_a_restart(
    tmp_path: Path, peers: Peers, kafka_broker: KafkaBroker, ferretdb: FerretDB
) -> None:
    """RFC 3461 §4.1 / RFC 3464 Action: delayed, on Kafka and FerretDB: a peer answers 451 to
    every RCPT; 2 s after queueing, the sender of the recipient without NOTIFY (FAILURE,DELAY
    by default) gets one delay notice in its INBOX, read with imaplib, with the peer's reply
    and Will-Retry-Until; the recipient with NOTIFY=FAILURE gets none. Retries go on every
    second, across a restart of delivery, and no second notice follows: the queue entry in
    the store records the first. The message is relayed once the peer takes it."""
    tenant = uuid.uuid4().hex[:8]
    env = {
        **quick_env(), **distributed_env(kafka_broker, ferretdb),
        "POSTMESH_KAFKA_TOPIC_PREFIX": f"delay-{tenant}.",
        "POSTMESH_DELIVERY_GROUP": f"delay-{tenant}-delivery",
        "POSTMESH_DNS_SERVERS": peers.dns.servers, "POSTMESH_SMTP_PORT": str(peers.port),
        "POSTMESH_HOSTNAME": "out.example.test",
        "POSTMESH_RETRY_SCHEDULE": "1s", "POSTMESH_QUEUE_POLL_SECONDS": "0.2",
        # A lease held at the restart comes back soon.
        "POSTMESH_QUEUE_LEASE_SECONDS": "3",
        "POSTMESH_DELIVERY_DELAY_WARNING_SECONDS": "2",
    }  # fmt: skip
    stack = Stack(tmp_path / "delay", free_stack_ports(), env)
    stack.start(timeout=120)
    ops = stack.ports.ops["delivery"]
    notices = "postmesh_delivery_delay_notices_total"
    try:
        sender, pw = new_sender(stack)
        marker = uuid.uuid4().hex[:10]
        with SmtpSink(SINK_4XX, peers.port, soft=("RCPT",), soft_reply="451 4.3.0 come back later"):
            qid = submit_for_id(stack, sender, pw, "dora@later.test", message(sender, [], marker))
            with smtplib.SMTP("127.0.0.1", stack.ports.smtp_submission, timeout=30) as smtp:
                smtp.starttls(context=insecure_tls())
                smtp.login(sender, pw)
                assert smtp.mail(sender)[0] == 250
                assert smtp.rcpt("fred@later.test", options=["NOTIFY=FAILURE"])[0] == 250
                code, reply = smtp.data(message(sender, [], f"{marker}-quiet"))
            assert code == 250, reply
            quiet = reply.decode().rsplit(" ", 1)[-1]

            [notice] = wait_for(lambda: reports(stack, sender, pw) or None, 60, "the notice")
            assert notice["Subject"] == "Delayed Mail (still being retried)"
            human, status, returned = notice.iter_parts()
            text = " ".join(status.as_string().split())
            for line in (
                "Reporting-MTA: dns; out.example.test",
                "Final-Recipient: rfc822; dora@later.test",
                "Action: delayed",
                "Status: 4.3.0",
                "Remote-MTA: dns; mx.later.test",
                "Diagnostic-Code: smtp; 451 4.3.0 come back later",
                "Will-Retry-Until: ",
            ):
                assert line in text, text
            assert "fred@later.test" not in text
            assert "come back later" in human.get_content()
            assert returned.get_content_type() == "text/rfc822-headers"
            assert f"Subject: relay {marker}" in returned.get_content()
            told = wait_for(lambda: deferred_entry(stack, qid), 30, "the entry")[
                "delay_notified_at"
            ]
            assert told

            def attempts(qid: str) -> int:
                status, entries = admin(stack, "GET", f"/api/v1/queue/{qid}")
                assert status == 200, entries
                return int(entries[0]["attempts"])

            # Several more retries, each deferred again: no second notice.
            after = attempts(qid) + 3
            wait_for(lambda: attempts(qid) >= after or None, 30, "three more retries")
            assert ops_metric(ops, notices) == 1
            # A restart of delivery: nothing in memory, the queue entry remembers.
            proc = stack.procs["delivery"]
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            stack._spawn("delivery")
            stack._wait_ready("delivery", 60)
            after = attempts(qid) + 3
            wait_for(lambda: attempts(qid) >= after or None, 60, "retries after the restart")
            assert ops_metric(ops, notices) == 0  # the new process sent none
            assert admin(stack, "GET", f"/api/v1/queue/{qid}")[1][0]["delay_notified_at"] == told
            assert admin(stack, "GET", f"/api/v1/queue/{quiet}")[1][0]["delay_notified_at"] is None
        with SmtpSink(SINK_4XX, peers.port, dump=True) as accepting:
            wait_for(
                lambda: sum(f"relay {marker}".encode() in d for d in accepting.dumped()) >= 2
                or None,
                60, "both messages at the peer",
            )  # fmt: skip
            wait_for(
                lambda: all(admin(stack, "GET", f"/api/v1/queue/{q}")[0] == 404
                            for q in (qid, quiet)) or None,
                30, "the entries to leave the queue",
            )  # fmt: skip
        [only] = reports(stack, sender, pw)  # still the one notice: no second, no bounce
        assert only["Message-ID"] == notice["Message-ID"]
    finally:
        print(f"----- delivery log tail -----\n{stack.log_tail('delivery', 60)}")
        stack.stop()


def test_sigkill_of_delivery_mid_queue_loses_nothing(relay_stack: Stack, peers: Peers) -> None:
    sender, pw = new_sender(relay_stack)
    local, local_pw = new_sender(relay_stack)
    markers = [uuid.uuid4().hex[:10] for _ in range(12)]
    with smtplib.SMTP("127.0.0.1", relay_stack.ports.smtp_submission, timeout=30) as smtp:
        smtp.starttls(context=insecure_tls())
        smtp.login(sender, pw)
        for m in markers:
            rcpts = [f"{m}@slow.test", local]  # 1 s per RCPT: the batch is in flight
            assert smtp.sendmail(sender, rcpts, message(sender, rcpts, m)) == {}
    wait_for(lambda: any(arrived(peers.postfix, m) for m in markers) or None, 60, "the first relay")
    proc = relay_stack.procs["delivery"]
    pending = [m for m in markers if not arrived(peers.postfix, m)]
    print(f"SIGKILL with {len(pending)} of {len(markers)} messages not yet at the peer")
    assert pending, "the batch was done before the kill: nothing was tested"
    proc.kill()  # SIGKILL: no clean shutdown, leases held, bus offsets uncommitted
    proc.wait(10)
    relay_stack._spawn("delivery")
    relay_stack._wait_ready("delivery", 60)
    wait_for(
        lambda: all(arrived(peers.postfix, m) for m in markers) or None,
        90, "every message at the remote peer",
    )  # fmt: skip
    copies = {m: len(arrived(peers.postfix, m)) for m in markers}
    # RFC 5321 §6.1 prefers a duplicate to a loss: a message sent but not yet marked done
    # when the process died is sent again. Reported, and never more than one extra.
    duplicates = sum(n - 1 for n in copies.values())
    print(f"remote duplicates after SIGKILL: {duplicates} of {len(markers)}")
    assert all(1 <= n <= 2 for n in copies.values()), copies
    local_got = wait_for(
        lambda: ((got := imap_fetch_all(relay_stack, local, local_pw))
        and len(got) >= len(markers) and got) or None,
        60, "every local copy",
    )  # fmt: skip
    subjects = sorted(
        email.message_from_bytes(raw)["Subject"].removeprefix("relay ") for raw in local_got
    )
    assert subjects == sorted(markers)  # each local message exactly once


def admin(stack: Stack, method: str, path: str, token: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{stack.ports.queue_admin}{path}",
        headers={"Authorization": f"Bearer {token or stack.admin_token()}"},
        method=method,
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def admin_until_not_busy(stack: Stack, method: str, path: str) -> tuple[int, Any]:
    """A worker may be attempting the entry this very moment (409): ask again."""
    return wait_for(
        lambda: ((r := admin(stack, method, path))[0] != 409 and r) or None, 30, f"{method} {path}"
    )


def submit_for_id(stack: Stack, sender: str, password: str, rcpt: str, msg: bytes) -> str:
    """Submit and return the queue id from the 250 reply ("queued as <id>")."""
    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_submission, timeout=30) as smtp:
        smtp.starttls(context=insecure_tls())
        smtp.login(sender, password)
        assert smtp.mail(sender)[0] == 250 and smtp.rcpt(rcpt)[0] == 250
        code, reply = smtp.data(msg)
    assert code == 250, reply
    return reply.decode().rsplit(" ", 1)[-1]


def deferred_entry(stack: Stack, queue_id: str) -> dict[str, Any] | None:
    status, entries = admin(stack, "GET", f"/api/v1/queue/{queue_id}")
    if status != 200 or not entries or entries[0]["attempts"] < 1:
        return None
    return entries[0]  # type: ignore[no-any-return]


def test_queue_admin_retry_now_delete_with_bounce_and_trace(
    relay_stack: Stack, peers: Peers
) -> None:
    sender, pw = new_sender(relay_stack)
    assert admin(relay_stack, "GET", "/api/v1/queue", token="x" * 20)[0] == 401
    assert admin(relay_stack, "GET", "/api/v1/trace/NOSUCHID0000")[0] == 404
    assert admin(relay_stack, "POST", "/api/v1/queue/NOSUCHID0000/retry")[0] == 404
    marker, gone = uuid.uuid4().hex[:10], uuid.uuid4().hex[:10]
    with SmtpSink(SINK_4XX, peers.port, soft=("RCPT",), soft_reply="451 4.3.0 come back later"):
        qid = submit_for_id(relay_stack, sender, pw, "dave@later.test", message(sender, [], marker))
        qid2 = submit_for_id(relay_stack, sender, pw, "erin@later.test", message(sender, [], gone))
        entry = wait_for(lambda: deferred_entry(relay_stack, qid), 60, "the deferral")
        assert entry["recipient"] == "dave@later.test" and entry["sender"] == sender
        assert "451 4.3.0 come back later" in entry["last_error"]
        status, page = admin(relay_stack, "GET", "/api/v1/queue?page_size=1000")
        assert status == 200 and qid in {e["queue_id"] for e in page["entries"]}
        # The trace is read from postmesh.delivery-events, so it trails the queue a little.
        trace = wait_for(
            lambda: ((t := admin(relay_stack, "GET", f"/api/v1/trace/{qid}")[1])
            and len(t.get("steps", [])) >= 2 and t) or None,
            30, "the deferral in the trace",
        )  # fmt: skip
        assert trace["sender"] == sender
        steps = [(s["step"], s["recipient"]) for s in trace["steps"]]
        # Attempted before any queue entry (ADR 58): the deferral is what queued it.
        assert steps[:2] == [("accepted", ""), ("deferred", "dave@later.test")]
        deferred = trace["steps"][1]
        assert deferred["reply"] == "451 4.3.0 come back later"
        assert deferred["remote_mta"] == "mx.later.test" and deferred["next_attempt_at"]
        # Delete with a bounce: the sender is told, the entry is gone.
        wait_for(lambda: deferred_entry(relay_stack, qid2), 60, "the second deferral")
        status, done = admin_until_not_busy(
            relay_stack, "DELETE", f"/api/v1/queue/{qid2}?bounce=true"
        )
        assert status == 200 and done["action"] == "bounced"
        assert admin(relay_stack, "GET", f"/api/v1/queue/{qid2}")[0] == 404
        [dsn] = wait_for(lambda: reports(relay_stack, sender, pw) or None, 60, "the bounce")
        text = list(dsn.iter_parts())[1].as_string().replace("\n ", " ")
        assert "Final-Recipient: rfc822; erin@later.test" in text
        assert "deleted from the queue by the administrator" in text
    with SmtpSink(SINK_4XX, peers.port, dump=True) as accepting:
        status, done = admin_until_not_busy(relay_stack, "POST", f"/api/v1/queue/{qid}/retry")
        assert status in (202, 404)  # 404: a worker's own retry got there first
        wait_for(
            lambda: any(f"relay {marker}".encode() in d for d in accepting.dumped()) or None,
            60, "the retried message at the peer",
        )  # fmt: skip
        assert not any(f"relay {gone}".encode() in d for d in accepting.dumped())
    trace = wait_for(
        lambda: ((t := admin(relay_stack, "GET", f"/api/v1/trace/{qid}")[1])
        and t["steps"][-1]["step"] == "relayed" and t) or None,
        30, "the relayed step in the trace",
    )  # fmt: skip
    assert trace["steps"][-1]["reply"].startswith("250") and trace["queued"] == []


def test_first_attempt_before_the_queue_and_one_that_outlasts_its_wait(
    relay_stack: Stack, peers: Peers
) -> None:
    """ADR 58 over the wire: a message relayed at its first attempt never had a queue entry
    (no `queued` step); one whose first attempt outlasts the consumer's wait (slow.test's MX
    takes 1 s per RCPT, the wait is 0.5 s) is queued meanwhile and still arrives once."""
    sender, pw = new_sender(relay_stack)
    fast, slow = uuid.uuid4().hex[:10], uuid.uuid4().hex[:10]
    qid_fast = submit_for_id(relay_stack, sender, pw, "fay@ok.test", message(sender, [], fast))
    qid_slow = submit_for_id(relay_stack, sender, pw, "sam@slow.test", message(sender, [], slow))

    def steps(qid: str, last: str) -> list[tuple[str, str]] | None:
        status, trace = admin(relay_stack, "GET", f"/api/v1/trace/{qid}")
        got = [(s["step"], s["recipient"]) for s in trace.get("steps", [])] if status == 200 else []
        return got if got and got[-1][0] == last else None

    assert wait_for(lambda: steps(qid_fast, "relayed"), 60, "the fast relay") == [
        ("accepted", ""), ("relayed", "fay@ok.test")
    ]  # fmt: skip
    assert wait_for(lambda: steps(qid_slow, "relayed"), 60, "the slow relay") == [
        ("accepted", ""), ("queued", "sam@slow.test"), ("relayed", "sam@slow.test")
    ]  # fmt: skip
    wait_for(lambda: arrived(peers.postfix, slow) or None, 30, "the slow message at the peer")
    assert len(arrived(peers.postfix, fast)) == 1 and len(arrived(peers.postfix, slow)) == 1
    assert admin(relay_stack, "GET", f"/api/v1/queue/{qid_slow}")[0] == 404  # entry gone


def test_first_attempt_before_the_queue_on_kafka(
    tmp_path: Path, peers: Peers, kafka_broker: KafkaBroker, ferretdb: FerretDB
) -> None:
    """ADR 58 on the distributed backends: delivery's Kafka consumer knows a record published
    while it holds the partition is new, so the message is relayed before any queue entry
    (no `queued` step), byte for byte, once."""
    tenant = uuid.uuid4().hex[:8]
    env = {
        **quick_env(), **distributed_env(kafka_broker, ferretdb),
        # Its own topics and its own consumer group: in the shared group, this stack's
        # delivery joining and leaving made the session's distributed stack rebalance too.
        "POSTMESH_KAFKA_TOPIC_PREFIX": f"relay-{tenant}.",
        "POSTMESH_DELIVERY_GROUP": f"relay-{tenant}-delivery",
        "POSTMESH_DNS_SERVERS": peers.dns.servers, "POSTMESH_SMTP_PORT": str(peers.port),
        "POSTMESH_HOSTNAME": "out.example.test",
    }  # fmt: skip
    stack = Stack(tmp_path / "kafka-relay", free_stack_ports(), env)
    stack.start(timeout=120)
    try:
        sender, pw = new_sender(stack)
        marker = uuid.uuid4().hex[:10]
        original = message(sender, ["kim@ok.test"], marker)
        qid = submit_for_id(stack, sender, pw, "kim@ok.test", original)
        [got] = wait_for(lambda: arrived(peers.postfix, marker) or None, 60, "the relay")
        assert got.endswith(original.replace(b"\r\n", b"\n"))

        def steps() -> list[tuple[str, str]] | None:
            status, trace = admin(stack, "GET", f"/api/v1/trace/{qid}")
            got = [(s["step"], s["recipient"]) for s in trace["steps"]] if status == 200 else []
            return got if got and got[-1][0] == "relayed" else None

        assert wait_for(steps, 30, "the trace") == [("accepted", ""), ("relayed", "kim@ok.test")]
        assert admin(stack, "GET", f"/api/v1/queue/{qid}")[0] == 404
    finally:
        print(f"----- delivery log tail -----\n{stack.log_tail('delivery', 40)}")
        stack.stop()


def header_fields(msg: bytes) -> tuple[list[bytes], bytes]:
    """The header fields (each with its folded lines and line ends) and the rest."""
    head, _, body = msg.partition(b"\r\n\r\n")
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line + b"\r\n"
        else:
            fields.append(line + b"\r\n")
    return fields, b"\r\n" + body


def only_signature(msg: bytes, keep: int) -> bytes:
    """``msg`` with every DKIM-Signature field but the ``keep``-th removed."""
    fields, rest = header_fields(msg)
    sigs = [f for f in fields if f.lower().startswith(b"dkim-signature:")]
    return b"".join(f for f in fields if f not in sigs or f is sigs[keep]) + rest


def published_dkim_keys(stack: Stack, domain: str = "example.test") -> list[tuple[str, str]]:
    """The DKIM TXT records (name, value) auth's dns-records route tells an operator to publish."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{stack.ports.admin}/api/v1/domains/{domain}/dns-records",
        headers={"Authorization": f"Bearer {stack.admin_token()}"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        records = json.loads(resp.read())
    return [
        (r["name"].rstrip("."), r["value"])
        for r in records
        if r["type"] == "TXT" and "._domainkey." in r["name"]
    ]


def dkim_dnsfunc(server: Dnsmasq) -> Callable[..., bytes]:
    """A dkimpy ``dnsfunc`` answering TXT queries from a real DNS server."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = ["127.0.0.1"], server.port

    def txt(name: bytes, timeout: int = 5) -> bytes:
        answer = resolver.resolve(name.decode().rstrip("."), "TXT", lifetime=timeout)
        return b"".join(s for rr in answer for s in rr.strings)  # type: ignore[attr-defined]

    return txt


def test_relayed_mail_is_dkim_signed_and_verifies_with_dkimpy_and_opendkim(
    relay_stack: Stack, peers: Peers, dnsmasq: Callable[[Zone], Dnsmasq]
) -> None:
    sender, pw = new_sender(relay_stack)
    marker = uuid.uuid4().hex[:10]
    submit(relay_stack, sender, pw, ["carol@ok.test"], message(sender, ["carol@ok.test"], marker))
    [got] = wait_for(lambda: arrived(peers.postfix, marker) or None, 60, "the relayed message")
    wire = got.replace(b"\n", b"\r\n")  # the peer's Maildir stores LF line ends
    fields, _ = header_fields(wire)
    sigs = [f for f in fields if f.lower().startswith(b"dkim-signature:")]
    algorithms = [re.search(rb"\ba=([\w-]+)", s).group(1) for s in sigs]  # type: ignore[union-attr]
    # RSA 2048 on top for verifiers that read one signature only, and Ed25519 (RFC 8463).
    assert algorithms == [b"rsa-sha256", b"ed25519-sha256"], sigs
    assert all(b"d=example.test" in s for s in sigs)

    # The keys as an operator publishes them: auth's dns-records, served by a real DNS server.
    keys = published_dkim_keys(relay_stack)
    assert len(keys) >= 2, keys
    txt = dkim_dnsfunc(dnsmasq(Zone(txt=keys, zones=["example.test"])))

    def dkimpy_verifies(msg: bytes, idx: int) -> bool:
        try:
            return bool(dkim.DKIM(msg).verify(idx=idx, dnsfunc=txt))
        except dkim.ValidationError:  # dkimpy raises on a body hash mismatch
            return False

    assert [dkimpy_verifies(wire, i) for i in range(len(sigs))] == [True, True]
    for i in range(len(sigs)):
        verdict = opendkim_verify(only_signature(wire, i), keys, zone="example.test")
        assert verdict.ok, (algorithms[i], verdict.output)
    # Both judges do fail a message changed in transit, so the passes above mean something.
    tampered = wire.replace(b"last line", b"last linE")
    assert not dkimpy_verifies(tampered, 0) and not dkimpy_verifies(tampered, 1)
    assert not opendkim_verify(only_signature(tampered, 0), keys, zone="example.test").ok
