"""BINARYMIME (RFC 3030 §3, ADR 40) end to end, with real parts on loopback. smtplib's
low-level calls send MAIL ... BODY=BINARYMIME and BDAT chunks (it has no BDAT of its own) with
a binary part holding NUL, bare CR and LF, "." lines and a line past 998 octets:

- to a local user: read back through IMAP (imaplib) exactly, by BINARY[] and BINARY[2], and by
  BODY[] with each NUL as 0x80 (a literal cannot carry NUL);
- to capable.test, routed to a second Postmesh stack (CHUNKING and BINARYMIME): our delivery
  sends it by BDAT and it arrives byte for byte in that stack's IMAP;
- to incapable.test, routed to Postfix 3.7 (CHUNKING, no BINARYMIME): the binary part goes as
  base64, and the DKIM signatures, made after the conversion, verify with dkimpy; a binary part
  inside multipart/signed cannot be converted, so the sender gets a 5.6.3 bounce;
- DATA after BODY=BINARYMIME is refused with 503;
- IMAP APPEND of a literal8 (RFC 3516 §4.4, ``~{n}``) stores the same octets, read back the
  same ways."""

from __future__ import annotations

import email
import email.message
import email.policy
import imaplib
import json
import re
import smtplib
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dkim
import pytest

from postmesh.common.devstack import Stack
from tests.integration.infra.dnsmasq import Dnsmasq, Zone
from tests.integration.infra.postfix_peer import PostfixPeer, free_port_on
from tests.integration.stack import embedded_env, free_stack_ports, quick_env, wait_for
from tests.integration.test_delivery_relay import (
    dkim_dnsfunc,
    new_sender,
    published_dkim_keys,
    reports,
)
from tests.integration.test_mail_end_to_end import create_user, insecure_tls

# NUL, bare CR, bare LF, a "." line, CRLF.CRLF and a line of 2000 octets: only BDAT carries it.
PART = b"\x00\x01\r\x02\n.\r\n\r\n.\r\nEND\r\n\xff\xfe\x00" + b"z" * 2000 + b"\n\x00tail\r"


def binary_message(sender: str, rcpt: str, marker: str, outer: str = "multipart/mixed") -> bytes:
    head = (
        f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: binarymime {marker}\r\n"
        f"Message-ID: <{marker}@example.test>\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\n"
        f'MIME-Version: 1.0\r\nContent-Type: {outer}; boundary="b1"'
    )
    if outer == "multipart/signed":
        head += '; protocol="application/pkcs7-signature"; micalg=sha-256'
    return (
        head.encode() + b"\r\n\r\n"
        b"--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b"--b1\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: binary\r\n\r\n" + PART + b"\r\n--b1--\r\n"
    )


def submit_binary(stack: Stack, sender: str, password: str, rcpt: str, msg: bytes) -> str:
    """Submission with BODY=BINARYMIME in two BDAT chunks; the queue id from the last 250."""
    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_submission, timeout=30) as smtp:
        smtp.starttls(context=insecure_tls())
        smtp.login(sender, password)
        assert smtp.has_extn("chunking") and smtp.has_extn("binarymime")
        assert smtp.mail(sender, ["BODY=BINARYMIME"])[0] == 250
        assert smtp.rcpt(rcpt)[0] == 250
        half = len(msg) // 2
        for chunk, last in ((msg[:half], b""), (msg[half:], b" LAST")):
            smtp.send(b"BDAT %d%s\r\n" % (len(chunk), last) + chunk)
            code, text = smtp.getreply()
            assert code == 250, text
    return text.decode().rpartition("queued as ")[2]


def imap_binary(stack: Stack, user: str, password: str, marker: str) -> dict[str, bytes] | None:
    """BINARY[2], BINARY[] and BODY[] of the message with ``marker``, or None before it is
    there. imaplib reads literal8 (``~{n}``) as it reads a literal."""
    with imaplib.IMAP4(host="127.0.0.1", port=stack.ports.imap) as imap:
        imap.starttls(insecure_tls())
        imap.login(user, password)
        assert imap.select("INBOX", readonly=True)[0] == "OK"
        typ, found = imap.uid("SEARCH", "SUBJECT", marker)
        assert typ == "OK"
        if not found[0]:
            return None
        uid = found[0].split()[-1].decode()
        typ, data = imap.uid("FETCH", uid, "(BINARY.PEEK[2] BINARY.PEEK[] BODY.PEEK[])")
        assert typ == "OK", data
    items = [d for d in data if isinstance(d, tuple)]
    out = {}
    for prefix, literal in items:
        name = re.search(rb"(BINARY\[2\]|BINARY\[\]|BODY\[\]) (~?)\{\d+\}$", prefix)
        assert name is not None, prefix
        out[name.group(1).decode()] = literal
        out[name.group(1).decode() + " literal8"] = name.group(2)
    return out


CAPABLE = "capable.test"
INCAPABLE = "incapable.test"


class Peers:
    def __init__(self, dns: Dnsmasq, postfix: PostfixPeer, receiver: Stack) -> None:
        self.dns, self.postfix, self.receiver = dns, postfix, receiver


@pytest.fixture(scope="module")
def stacks(
    tmp_path_factory: pytest.TempPathFactory,
    dnsmasq: Callable[[Zone], Dnsmasq],
    postfix_peer: Callable[..., PostfixPeer],
) -> Iterator[tuple[Stack, Peers]]:
    """The sending stack and its peers; both stacks start at once (their ports are known
    before either starts), which halves the wait."""
    dns = dnsmasq(Zone())
    postfix = postfix_peer(free_port_on("127.0.0.1"), [INCAPABLE], hostname="mx.incapable.test")
    common = {**quick_env(), **embedded_env(), "POSTMESH_DNS_SERVERS": dns.servers}
    receiver = Stack(
        Path(tmp_path_factory.mktemp("binarymime-receiver")),
        free_stack_ports(),
        {**common, "POSTMESH_HOSTNAME": "mx.capable.test"},
    )
    routes = (
        f"{CAPABLE}=[127.0.0.1]:{receiver.ports.smtp_mx},{INCAPABLE}=[127.0.0.1]:{postfix.port}"
    )
    sender = Stack(
        Path(tmp_path_factory.mktemp("binarymime-sender")),
        free_stack_ports(),
        {
            **common,
            "POSTMESH_TRANSPORT_MAP": routes,
            "POSTMESH_RETRY_SCHEDULE": "1s",
            "POSTMESH_QUEUE_POLL_SECONDS": "0.2",
            "POSTMESH_HOSTNAME": "out.example.test",
        },
    )
    with ThreadPoolExecutor(2) as pool:
        started = [pool.submit(s.start, timeout=90) for s in (receiver, sender)]
    try:
        for f in started:
            f.result()
        yield sender, Peers(dns, postfix, receiver)
    finally:
        print(f"----- receiver smtp-edge log tail -----\n{receiver.log_tail('smtp-edge', 40)}")
        print(f"----- sender delivery log tail -----\n{sender.log_tail('delivery', 60)}")
        receiver.stop()
        sender.stop()


@pytest.fixture(scope="module")
def sender_stack(stacks: tuple[Stack, Peers]) -> Stack:
    return stacks[0]


@pytest.fixture(scope="module")
def peers(stacks: tuple[Stack, Peers]) -> Peers:
    return stacks[1]


def test_binarymime_submission_reaches_imap_byte_exact(sender_stack: Stack) -> None:
    sender, pw = new_sender(sender_stack)
    reader = f"reader-{uuid.uuid4().hex[:8]}@example.test"
    create_user(sender_stack, reader, "reader-pw-1")
    marker = uuid.uuid4().hex[:10]
    original = binary_message(sender, reader, marker)
    submit_binary(sender_stack, sender, pw, reader, original)
    got = wait_for(
        lambda: imap_binary(sender_stack, reader, "reader-pw-1", marker), 60, "the message"
    )
    assert got["BINARY[2]"] == PART and got["BINARY[2] literal8"] == b"~"
    stored = got["BINARY[]"]
    assert stored.endswith(original)  # our Received field on top, the rest as sent
    # BODY[]: the stored octets, bare CR and LF included, with each NUL as 0x80 (RFC 9051).
    assert got["BODY[]"] == stored.replace(b"\x00", b"\x80")
    assert got["BODY[] literal8"] == b""


def test_imap_append_of_a_literal8_reads_back_byte_exact(sender_stack: Stack) -> None:
    """imaplib has no literal8 APPEND: its documented send()/readline() carry the command, the
    "+" continuation and the message after a real STARTTLS and LOGIN."""
    reader = f"reader-{uuid.uuid4().hex[:8]}@example.test"
    create_user(sender_stack, reader, "reader-pw-1")
    marker = uuid.uuid4().hex[:10]
    original = binary_message("someone@remote.example", reader, marker)
    with imaplib.IMAP4(host="127.0.0.1", port=sender_stack.ports.imap) as imap:
        imap.starttls(insecure_tls())
        imap.login(reader, "reader-pw-1")
        imap.send(b"X1 APPEND INBOX ~{%d}\r\n" % len(original))
        assert imap.readline().startswith(b"+ ")
        imap.send(original + b"\r\n")
        assert re.match(rb"X1 OK \[APPENDUID \d+ 1\] ", imap.readline())
    got = imap_binary(sender_stack, reader, "reader-pw-1", marker)
    assert got is not None
    assert got["BINARY[]"] == original and got["BINARY[] literal8"] == b"~"
    assert got["BINARY[2]"] == PART and got["BINARY[2] literal8"] == b"~"
    assert got["BODY[]"] == original.replace(b"\x00", b"\x80")


def test_data_after_body_binarymime_is_refused(sender_stack: Stack) -> None:
    reader = f"reader-{uuid.uuid4().hex[:8]}@example.test"
    create_user(sender_stack, reader, "reader-pw-1")
    with smtplib.SMTP("127.0.0.1", sender_stack.ports.smtp_mx, timeout=30) as smtp:
        smtp.ehlo("client.remote.example")
        assert smtp.mail("someone@remote.example", ["BODY=BINARYMIME"])[0] == 250
        assert smtp.rcpt(reader)[0] == 250
        smtp.putcmd("DATA")
        assert smtp.getreply() == (503, b"5.5.1 Error: BODY=BINARYMIME requires BDAT, not DATA")
        assert smtp.rset()[0] == 250  # RFC 3030 §3: the client resets; the session goes on
        assert smtp.noop()[0] == 250


def test_relay_to_binarymime_peer_arrives_byte_exact(
    sender_stack: Stack, peers: Peers, dnsmasq: Callable[[Zone], Dnsmasq]
) -> None:
    sender, pw = new_sender(sender_stack)
    rcpt = f"carol-{uuid.uuid4().hex[:8]}@{CAPABLE}"
    create_user(peers.receiver, rcpt, "carol-pw-1")
    marker = uuid.uuid4().hex[:10]
    original = binary_message(sender, rcpt, marker)
    submit_binary(sender_stack, sender, pw, rcpt, original)
    got = wait_for(
        lambda: imap_binary(peers.receiver, rcpt, "carol-pw-1", marker), 60, "the relayed copy"
    )
    # Byte for byte: the receiver took the bare CR/LF, which it refuses in anything but
    # BODY=BINARYMIME, so our delivery declared it.
    assert got["BINARY[2]"] == PART
    assert got["BINARY[]"].endswith(original)
    # It came by BDAT (the receiver's edge counts the chunks) and was signed by the sender.
    events = [json.loads(x) for x in peers.receiver.log_tail("smtp-edge", 2000).splitlines()]
    assert any(e.get("msg") == "bdat complete" for e in events)
    txt = _dkim_txt(sender_stack, dnsmasq)
    assert [dkim.DKIM(got["BINARY[]"]).verify(idx=i, dnsfunc=txt) for i in (0, 1)] == [True] * 2
    assert reports(sender_stack, sender, pw) == []  # no bounce


def _dkim_txt(stack: Stack, dnsmasq: Callable[[Zone], Dnsmasq]) -> Callable[..., bytes]:
    """A dkimpy dnsfunc answering from a real DNS server with the keys auth publishes."""
    return dkim_dnsfunc(dnsmasq(Zone(txt=published_dkim_keys(stack), zones=["example.test"])))


def test_relay_to_postfix_converts_to_base64_and_signs_what_is_sent(
    sender_stack: Stack, peers: Peers, dnsmasq: Callable[[Zone], Dnsmasq]
) -> None:
    sender, pw = new_sender(sender_stack)
    rcpt = f"dave@{INCAPABLE}"
    marker = uuid.uuid4().hex[:10]
    submit_binary(sender_stack, sender, pw, rcpt, binary_message(sender, rcpt, marker))
    [got] = wait_for(
        lambda: [m for m in peers.postfix.messages() if marker.encode() in m] or None,
        60, "the converted copy at Postfix",
    )  # fmt: skip
    wire = got.replace(b"\n", b"\r\n")  # the Maildir stores LF line ends; nothing bare is left
    parsed = email.message_from_bytes(wire, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    text, attachment = list(parsed.iter_parts())
    assert text.get_content() == "hello"
    assert attachment["Content-Transfer-Encoding"] == "base64"
    assert attachment.get_content() == PART  # no information lost (RFC 3030 §3)
    txt = _dkim_txt(sender_stack, dnsmasq)
    sigs = [f for f in parsed.get_all("DKIM-Signature") or []]
    assert len(sigs) == 2
    assert all(dkim.DKIM(wire).verify(idx=i, dnsfunc=txt) for i in range(len(sigs)))
    assert reports(sender_stack, sender, pw) == []


def test_relay_to_postfix_of_signed_binary_content_bounces_5_6_3(
    sender_stack: Stack, peers: Peers
) -> None:
    sender, pw = new_sender(sender_stack)
    rcpt = f"erin@{INCAPABLE}"
    marker = uuid.uuid4().hex[:10]
    msg = binary_message(sender, rcpt, marker, outer="multipart/signed")
    submit_binary(sender_stack, sender, pw, rcpt, msg)
    [report] = wait_for(lambda: reports(sender_stack, sender, pw) or None, 60, "the bounce")
    assert report.get_content_type() == "multipart/report"
    parts = list(report.iter_parts())
    status = parts[1].as_string()
    assert "Action: failed" in status and "Status: 5.6.3" in status
    assert "does not support BINARYMIME" in status and "multipart/signed" in status
    # The original comes back as its header section only (a report is 7bit/8bit mail).
    assert parts[-1].get_content_type() == "text/rfc822-headers"
    assert marker in parts[-1].get_content()
    assert not [m for m in peers.postfix.messages() if marker.encode() in m]
