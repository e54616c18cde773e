"""REQUIRETLS (RFC 8689) end to end, against real peers on loopback. The sending stack routes
capable.test to a second Postmesh stack (its own MX, domain and certificate: the capable peer)
and incapable.test to Postfix 3.7 with STARTTLS (which has no REQUIRETLS), both through
POSTMESH_TRANSPORT_MAP, and trusts only those two certificates (POSTMESH_RELAY_CA_FILE).
Three more domains find the same Postfix through MX records in dnsmasq: incapable-mx.test has
no MTA-STS policy (its MX cannot be validated, §4.2.1 step 2), sts-testing.test publishes one
listing it (validated), and sts-enforce.test an enforce policy naming another host (MTA-STS
refuses the MX unless the message says "TLS-Required: No", §4.2.2). The policies are served
over HTTPS by a real policy host on loopback."""

from __future__ import annotations

import email
import email.policy
import json
import smtplib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from postmesh.common.devstack import Stack
from postmesh.common.tls import ensure_dev_certificate
from tests.integration.infra.dnsmasq import Dnsmasq, Zone
from tests.integration.infra.mta_sts_server import MtaStsServer
from tests.integration.infra.postfix_peer import PostfixPeer, free_port_on
from tests.integration.stack import embedded_env, free_stack_ports, quick_env, wait_for
from tests.integration.test_delivery_relay import (
    admin,
    admin_until_not_busy,
    arrived,
    deferred_entry,
    message,
    new_sender,
    reports,
    submit_for_id,
)
from tests.integration.test_mail_end_to_end import create_user, imap_fetch_all, insecure_tls

CAPABLE_MX = "mx.capable.test"
INCAPABLE_MX = "mx.incapable.test"
POLICY = "version: STSv1\nmode: {mode}\nmx: {mx}\nmax_age: 86400\n"
POLICIES = {
    "sts-testing.test": POLICY.format(mode="testing", mx=INCAPABLE_MX),
    "sts-enforce.test": POLICY.format(mode="enforce", mx="mx.elsewhere.test"),
}
MX_ROUTED = ["incapable-mx.test", *POLICIES]
ZONE = Zone(
    mx=[(d, INCAPABLE_MX, 10) for d in MX_ROUTED],
    a=[(CAPABLE_MX, "127.0.0.1"), (INCAPABLE_MX, "127.0.0.1")]
    + [(f"mta-sts.{d}", "127.0.0.1") for d in POLICIES],
    txt=[(f"_mta-sts.{d}", "v=STSv1; id=policy1") for d in POLICIES],
)


class Peers:
    def __init__(
        self, dns: Dnsmasq, postfix: PostfixPeer, receiver: Stack, ca: Path, sts: MtaStsServer
    ) -> None:
        self.dns, self.postfix, self.receiver, self.ca = dns, postfix, receiver, ca
        self.sts = sts


@pytest.fixture(scope="module")
def peers(
    tmp_path_factory: pytest.TempPathFactory,
    dnsmasq: Callable[[Zone], Dnsmasq],
    postfix_peer: Callable[..., PostfixPeer],
) -> Iterator[Peers]:
    base = Path(tmp_path_factory.mktemp("requiretls"))
    dns = dnsmasq(ZONE)
    # Self-signed certificates for each peer's MX name; together they are the sender's CA file.
    postfix_cert = ensure_dev_certificate(base / "postfix-tls", INCAPABLE_MX)
    capable_cert = ensure_dev_certificate(base / "capable-tls", CAPABLE_MX)
    sts = MtaStsServer(base / "sts-tls", POLICIES).start()
    ca = base / "ca.pem"
    ca.write_bytes(b"".join(p.read_bytes() for p in (postfix_cert[0], capable_cert[0], sts.cert)))
    port = free_port_on("127.0.0.1")
    postfix = postfix_peer(
        port, ["incapable.test", *MX_ROUTED], hostname=INCAPABLE_MX, tls=postfix_cert
    )
    env = {
        **quick_env(),
        **embedded_env(),
        "POSTMESH_DNS_SERVERS": dns.servers,
        "POSTMESH_HOSTNAME": CAPABLE_MX,
        "POSTMESH_TLS_CERT_FILE": str(capable_cert[0]),
        "POSTMESH_TLS_KEY_FILE": str(capable_cert[1]),
    }
    receiver = Stack(base / "receiver", free_stack_ports(), env)
    try:
        receiver.start(timeout=90)
        yield Peers(dns, postfix, receiver, ca, sts)
    finally:
        for svc in ("smtp-edge", "delivery"):
            print(f"----- receiver {svc} log tail -----\n{receiver.log_tail(svc, 40)}")
        receiver.stop()
        sts.stop()


@pytest.fixture(scope="module")
def sender_stack(tmp_path_factory: pytest.TempPathFactory, peers: Peers) -> Iterator[Stack]:
    routes = (
        f"capable.test=[{CAPABLE_MX}]:{peers.receiver.ports.smtp_mx},"
        f"incapable.test=[{INCAPABLE_MX}]:{peers.postfix.port}"
    )
    env = {
        **quick_env(),
        **embedded_env(),
        "POSTMESH_DNS_SERVERS": peers.dns.servers,
        "POSTMESH_SMTP_PORT": str(peers.postfix.port),  # the MX-routed incapable-mx.test
        "POSTMESH_TRANSPORT_MAP": routes,
        "POSTMESH_RELAY_CA_FILE": str(peers.ca),  # MX certificates and the policy host's
        "POSTMESH_MTA_STS_HTTPS_PORT": str(peers.sts.port),
        "POSTMESH_RETRY_SCHEDULE": "1s",
        "POSTMESH_QUEUE_POLL_SECONDS": "0.2",
        "POSTMESH_HOSTNAME": "out.example.test",
    }
    stack = Stack(Path(tmp_path_factory.mktemp("requiretls-sender")), free_stack_ports(), env)
    stack.start(timeout=90)
    yield stack
    print(f"----- sender delivery log tail -----\n{stack.log_tail('delivery', 60)}")
    stack.stop()


def submit_requiretls(stack: Stack, sender: str, password: str, rcpt: str, msg: bytes) -> str:
    """Submit over STARTTLS with MAIL FROM ... REQUIRETLS; the queue id from the 250 reply."""
    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_submission, timeout=30) as smtp:
        smtp.starttls(context=insecure_tls())
        smtp.login(sender, password)
        assert smtp.has_extn("requiretls")
        assert smtp.mail(sender, ["REQUIRETLS"]) == (250, b"2.1.0 Ok")
        assert smtp.rcpt(rcpt)[0] == 250
        code, reply = smtp.data(msg)
    assert code == 250, reply
    return reply.decode().rsplit(" ", 1)[-1]


def log_events(stack: Stack, service: str) -> list[dict[str, Any]]:
    path = stack.log_dir / f"{service}.log"
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_not_offered_or_accepted_without_tls_over_the_wire(sender_stack: Stack) -> None:
    sender, pw = new_sender(sender_stack)
    no_tls = (530, b"5.7.10 REQUIRETLS requires a TLS session (STARTTLS first)")
    for port in (sender_stack.ports.smtp_mx, sender_stack.ports.smtp_submission):
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.ehlo("client.test")
            assert smtp.has_extn("starttls") and not smtp.has_extn("requiretls")
            if port == sender_stack.ports.smtp_submission:
                smtp.login(sender, pw)  # loopback: AUTH before TLS (ADR 4), REQUIRETLS not
            assert smtp.docmd(f"MAIL FROM:<{sender}> REQUIRETLS") == no_tls
            smtp.starttls(context=insecure_tls())
            smtp.ehlo("client.test")
            assert smtp.has_extn("requiretls")


def test_relayed_with_requiretls_to_a_capable_postmesh_peer(
    sender_stack: Stack, peers: Peers
) -> None:
    sender, pw = new_sender(sender_stack)
    rcpt = f"carol-{uuid.uuid4().hex[:6]}@capable.test"
    create_user(peers.receiver, rcpt, "carol-pw-1")
    marker = uuid.uuid4().hex[:10]
    qid = submit_requiretls(sender_stack, sender, pw, rcpt, message(sender, [rcpt], marker))
    [got] = wait_for(
        lambda: [m for m in imap_fetch_all(peers.receiver, rcpt, "carol-pw-1")
                 if marker.encode() in m] or None,
        60, "the message in the capable peer's mailbox",
    )  # fmt: skip
    parsed = email.message_from_bytes(got, policy=email.policy.default)
    # The receiving MX's own Received field: from our delivery, over TLS (ESMTPS).
    top = str((parsed.get_all("Received") or [""])[0])
    assert f"by {CAPABLE_MX} (Postmesh) with ESMTPS id" in top, top
    assert "(using TLSv1." in top
    remote_qid = top.split(" id ", 1)[1].split()[0].rstrip(";")
    # The receiving side recorded REQUIRETLS: at MAIL and on the bus record (its logs), and
    # its delivery trace for the local delivery.
    edge = [e for e in log_events(peers.receiver, "smtp-edge") if e.get("queue_id") == remote_qid]
    assert any(e["msg"] == "mail from" and e.get("requiretls") is True for e in edge), edge
    assert any(e["msg"] == "message queued" and e.get("requiretls") is True for e in edge)
    _status, trace = wait_for(
        lambda: ((r := admin(peers.receiver, "GET", f"/api/v1/trace/{remote_qid}"))[0] == 200
                 and len(r[1]["steps"]) >= 2 and r) or None,
        30, "the receiving side's trace",
    )  # fmt: skip
    assert trace["requiretls"] is True
    assert [s["step"] for s in trace["steps"]] == ["accepted", "delivered"]
    # The sending side's trace: relayed, with REQUIRETLS, by the capable MX.
    trace = wait_for(
        lambda: ((t := admin(sender_stack, "GET", f"/api/v1/trace/{qid}")[1])
                 and t.get("steps", [{}])[-1].get("step") == "relayed" and t) or None,
        30, "the relayed step",
    )  # fmt: skip
    assert trace["requiretls"] is True and trace["steps"][-1]["remote_mta"] == CAPABLE_MX
    assert reports(sender_stack, sender, pw) == []  # no bounce


def test_postfix_without_requiretls_bounces_5_7_30_and_ordinary_mail_still_goes(
    sender_stack: Stack, peers: Peers
) -> None:
    sender, pw = new_sender(sender_stack)
    rcpt = "dave@incapable.test"
    marker = uuid.uuid4().hex[:10]
    submit_requiretls(sender_stack, sender, pw, rcpt, message(sender, [rcpt], marker))
    [dsn] = wait_for(lambda: reports(sender_stack, sender, pw) or None, 60, "the bounce")
    _human, status, returned = dsn.iter_parts()
    text = status.as_string().replace("\n ", " ")
    for line in (
        f"Final-Recipient: rfc822; {rcpt}",
        "Action: failed",
        "Status: 5.7.30",
        "REQUIRETLS support required",
    ):
        assert line in text, text
    # RFC 8689 §5: the report returns the header section only, never the body.
    assert returned.get_content_type() == "text/rfc822-headers"
    raw = dsn.as_bytes()
    assert f"relay {marker}".encode() in raw and b"two dots" not in raw
    assert arrived(peers.postfix, marker) == []
    # Ordinary mail to the same peer is unchanged: relayed (opportunistic STARTTLS).
    plain = uuid.uuid4().hex[:10]
    with smtplib.SMTP("127.0.0.1", sender_stack.ports.smtp_submission, timeout=30) as smtp:
        smtp.starttls(context=insecure_tls())
        smtp.login(sender, pw)
        assert smtp.sendmail(sender, [rcpt], message(sender, [rcpt], plain)) == {}
    [got] = wait_for(lambda: arrived(peers.postfix, plain) or None, 60, "the ordinary message")
    assert b"(using TLSv1." in got  # Postfix's Received: the hop was encrypted
    assert len(reports(sender_stack, sender, pw)) == 1  # still only the one bounce


def test_mx_without_an_mta_sts_policy_bounces_5_7_10(sender_stack: Stack, peers: Peers) -> None:
    """incapable-mx.test's MX comes from DNS without DNSSEC or MTA-STS: not validated, so the
    message is not sent there at all (RFC 8689 §4.2.1 step 2)."""
    sender, pw = new_sender(sender_stack)
    marker = uuid.uuid4().hex[:10]
    rcpt = "erin@incapable-mx.test"
    submit_requiretls(sender_stack, sender, pw, rcpt, message(sender, [rcpt], marker))
    [dsn] = wait_for(lambda: reports(sender_stack, sender, pw) or None, 60, "the bounce")
    text = list(dsn.iter_parts())[1].as_string().replace("\n ", " ")
    assert "Status: 5.7.10" in text and "not validated by an MTA-STS policy" in text, text
    assert arrived(peers.postfix, marker) == []


def test_mx_validated_by_mta_sts_gets_as_far_as_ehlo_then_5_7_30(
    sender_stack: Stack, peers: Peers
) -> None:
    """sts-testing.test's policy lists its MX: validated, so the session is opened, the
    certificate verified for mx.incapable.test, and only the missing REQUIRETLS refuses it."""
    sender, pw = new_sender(sender_stack)
    marker = uuid.uuid4().hex[:10]
    rcpt = "frank@sts-testing.test"
    submit_requiretls(sender_stack, sender, pw, rcpt, message(sender, [rcpt], marker))
    [dsn] = wait_for(lambda: reports(sender_stack, sender, pw) or None, 60, "the bounce")
    text = list(dsn.iter_parts())[1].as_string().replace("\n ", " ")
    assert "Status: 5.7.30" in text and f"{INCAPABLE_MX}[127.0.0.1] does not offer" in text, text
    assert "mta-sts.sts-testing.test/.well-known/mta-sts.txt" in peers.sts.requests
    assert arrived(peers.postfix, marker) == []


def test_tls_required_no_is_delivered_where_mta_sts_enforce_refuses(
    sender_stack: Stack, peers: Peers
) -> None:
    sender, pw = new_sender(sender_stack)
    rcpt = "gina@sts-enforce.test"
    held, relaxed = uuid.uuid4().hex[:10], uuid.uuid4().hex[:10]
    # Without the header the enforce policy keeps the message from the unlisted MX: deferred.
    qid = submit_for_id(sender_stack, sender, pw, rcpt, message(sender, [rcpt], held))
    entry = wait_for(lambda: deferred_entry(sender_stack, qid), 60, "the MTA-STS deferral")
    assert "4.7.5" in entry["last_error"] and "MTA-STS policy" in entry["last_error"]
    # The sender's "TLS-Required: No" (RFC 8689 §4.2.2): delivered to that MX anyway.
    msg = b"TLS-Required: No\r\n" + message(sender, [rcpt], relaxed)
    submit_for_id(sender_stack, sender, pw, rcpt, msg)
    [got] = wait_for(lambda: arrived(peers.postfix, relaxed) or None, 60, "the relaxed message")
    assert b"\nTLS-Required: No\n" in got  # left in the message for the next hops
    assert b"(using TLSv1." in got  # still STARTTLS where offered
    assert arrived(peers.postfix, held) == []
    status, _ = admin_until_not_busy(sender_stack, "DELETE", f"/api/v1/queue/{qid}")
    assert status == 200
