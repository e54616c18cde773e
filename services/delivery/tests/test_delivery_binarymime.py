"""BINARYMIME on the way out (RFC 3030 §3, ADR 40): BDAT to a peer that offers CHUNKING and
BINARYMIME, base64 conversion for one that does not (never of signed content), 5.6.3 when it
cannot be converted, and DKIM signing of what is actually sent."""

from __future__ import annotations

import email
import email.policy

import pytest
from delivery_fakes import FakeSmtp

from postmesh.delivery import bdat
from postmesh.delivery.binarymime import NotConvertible, is_binary, to_seven_or_eight_bit
from postmesh.delivery.smtp_client import Envelope, Rcpt, SmtpSession

# NUL, bare CR, bare LF, "." lines, CRLF.CRLF and a line past 998 octets: only BDAT carries it.
PART = b"\x00\x01\r\x02\n.\r\n\r\n.\r\n\xff\xfe" + b"z" * 2000 + b"\n\x00end"


def mime(part: bytes = PART, *, outer: str = "multipart/mixed", extra: bytes = b"") -> bytes:
    return (
        extra + b"From: <a@example.test>\r\nTo: <b@remote.test>\r\nSubject: binary\r\n"
        b"MIME-Version: 1.0\r\n"
        + f'Content-Type: {outer}; boundary="b1"'.encode()
        + b"\r\n\r\npreamble\r\n"
        b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\nh\xc3\xa9llo\r\n"
        b"--b1\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding:\r\n binary\r\n\r\n" + part + b"\r\n--b1--\r\nepilogue\r\n"
    )


def parts(message: bytes) -> list[email.message.EmailMessage]:
    msg = email.message_from_bytes(message, policy=email.policy.default)
    return list(msg.iter_parts())  # type: ignore[attr-defined]


def test_is_binary() -> None:
    assert not is_binary(b"Subject: x\r\n\r\nh\xc3\xa9llo\r\n" + b"y" * 998 + b"\r\n")
    for bad in (b"a\x00b\r\n", b"a\nb\r\n", b"a\rb\r\n", b"y" * 999 + b"\r\n"):
        assert is_binary(bad), bad


def test_binary_leaf_becomes_base64_and_the_rest_stays_as_it_was() -> None:
    original = mime()
    out = to_seven_or_eight_bit(original)
    assert not is_binary(out)
    text, attachment = parts(out)
    assert attachment["Content-Transfer-Encoding"] == "base64"
    assert attachment.get_content() == PART  # no loss (RFC 3030 §3 rule 1)
    assert text.get_content() == "héllo"  # the CRLF before a delimiter is the delimiter's
    # Only the binary part changed: header, preamble, the 8bit part and epilogue as they were.
    head, _, _ = original.partition(b"--b1\r\nContent-Type: application")
    assert out.startswith(head)
    assert out.endswith(b"\r\n--b1--\r\nepilogue\r\n")
    assert max(len(line) for line in out.split(b"\r\n")) <= 76 + 30


def test_nothing_binary_comes_back_unchanged() -> None:
    plain = mime(b"just text")
    plain = plain.replace(
        b"Content-Transfer-Encoding:\r\n binary", b"Content-Transfer-Encoding: 7bit"
    )
    assert to_seven_or_eight_bit(plain) is plain


def test_binary_label_on_harmless_octets_is_still_converted() -> None:
    """A part labelled binary is not valid 7bit/8bit MIME even when its octets would pass."""
    out = to_seven_or_eight_bit(mime(b"text that is fine"))
    assert parts(out)[1]["Content-Transfer-Encoding"] == "base64"


def test_header_only_entity_keeps_its_last_field() -> None:
    out = to_seven_or_eight_bit(b"Subject: x\r\nContent-Transfer-Encoding: binary")
    assert out == b"Subject: x\r\nContent-Transfer-Encoding: base64\r\n\r\n\r\n"


def test_nested_message_is_converted_inside() -> None:
    inner = (
        b"Subject: inner\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: binary\r\n\r\n" + PART
    )
    outer = (
        b"Subject: outer\r\nMIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n"
        b"Content-Transfer-Encoding: binary\r\n\r\n" + inner
    )
    out = to_seven_or_eight_bit(outer)
    assert not is_binary(out)
    assert b"Content-Transfer-Encoding: 7bit\r\n" in out.split(b"\r\n\r\n")[0] + b"\r\n"
    nested = email.message_from_bytes(out, policy=email.policy.default)
    [body] = list(nested.iter_parts())  # type: ignore[attr-defined]
    assert body.get_content() == PART


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (mime(outer="multipart/signed"), "multipart/signed"),
        (mime(extra=b"DKIM-Signature: v=1; d=elsewhere.test; b=x\r\n"), "DKIM/ARC"),
        (mime(extra=b"ARC-Message-Signature: i=1; d=elsewhere.test; b=x\r\n"), "DKIM/ARC"),
        (b"Subject: x\r\nContent-Transfer-Encoding: base64\r\n\r\nQQ\x00==\r\n", "base64"),
        (b"Subj\x00ect: x\r\n\r\nbody\r\n", "header"),
        (b'Content-Type: multipart/mixed; boundary="zz"\r\n\r\n\x00 no parts\r\n', "boundary"),
    ],
)
def test_signed_or_unparseable_content_is_not_converted(message: bytes, why: str) -> None:
    with pytest.raises(NotConvertible, match=why):
        to_seven_or_eight_bit(message)


async def _send(
    peer: FakeSmtp, message: bytes, envelope: Envelope | None = None, **kw: object
) -> dict[str, int | str]:
    await peer.start()
    s = SmtpSession("mx.test", "127.0.0.1", peer.port, "out.example.test", 5, 5)
    await s.open()
    env = envelope or Envelope("a@example.test", binary=True)
    replies = await s.send(env, [Rcpt("b@remote.test")], message, **kw)  # type: ignore[arg-type]
    await s.close()
    await peer.stop()
    r = replies["b@remote.test"]
    return {"code": r.code, "text": r.text}


BINARY_PEER = ("8BITMIME", "SIZE 10000000", "CHUNKING", "BINARYMIME")


async def test_binarymime_peer_gets_bdat_chunks_byte_for_byte(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bdat, "CHUNK_SIZE", 1000)
    peer = FakeSmtp(extensions=BINARY_PEER)
    message = mime()
    assert (await _send(peer, message))["code"] == 250
    [tx] = peer.transactions
    assert b"BODY=BINARYMIME" in tx.mail
    assert tx.data == message  # no dot-stuffing, no line-end repair, no encoding
    assert tx.bdat_chunks == [1000] * (len(message) // 1000) + [len(message) % 1000]
    assert not any(c.upper().startswith(b"DATA") for c in peer.commands)
    assert peer.commands[-len(tx.bdat_chunks) - 1 :][-1].upper().startswith(b"QUIT")


async def test_refused_chunk_ends_the_transaction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bdat, "CHUNK_SIZE", 1000)
    peer = FakeSmtp(extensions=BINARY_PEER, bdat_replies={1: b"552 5.3.4 too big\r\n"})
    assert await _send(peer, mime()) == {"code": 552, "text": "5.3.4 too big"}
    bdats = [c for c in peer.commands if c.upper().startswith(b"BDAT")]
    assert len(bdats) == 2  # RFC 3030 §2: no more chunks after a refusal
    assert peer.commands[-2].upper().startswith(b"RSET")
    assert peer.transactions == []


@pytest.mark.parametrize(
    "extensions",
    [("8BITMIME", "CHUNKING"), ("8BITMIME", "BINARYMIME")],  # BINARYMIME needs CHUNKING too
    ids=["no-binarymime", "no-chunking"],
)
async def test_peer_without_binarymime_gets_base64_by_data(extensions: tuple[str, ...]) -> None:
    peer = FakeSmtp(extensions=extensions)
    assert (await _send(peer, mime()))["code"] == 250
    [tx] = peer.transactions
    assert b"BODY=8BITMIME" in tx.mail and b"BINARYMIME" not in tx.mail
    wire = b"".join(
        line[1:] if line.startswith(b".") else line for line in tx.data.splitlines(keepends=True)
    )
    assert wire == to_seven_or_eight_bit(mime())
    assert parts(wire)[1].get_content() == PART


async def test_converted_to_7bit_for_a_peer_without_8bitmime() -> None:
    ascii_text = mime().replace(b"h\xc3\xa9llo", b"hello").replace(b": 8bit", b": 7bit")
    peer = FakeSmtp(extensions=("SIZE 100000",))
    assert (await _send(peer, ascii_text))["code"] == 250
    [tx] = peer.transactions
    assert b"BODY=" not in tx.mail


async def test_unconvertible_to_a_peer_without_binarymime_is_returned_5_6_3() -> None:
    peer = FakeSmtp(extensions=("8BITMIME", "CHUNKING"))
    reply = await _send(peer, mime(outer="multipart/signed"))
    assert reply["code"] == 554
    assert str(reply["text"]).startswith("5.6.3 mx.test does not support BINARYMIME")
    assert peer.transactions == [] and not any(c.startswith(b"MAIL") for c in peer.commands)


async def test_signing_covers_what_is_sent() -> None:
    """DKIM signs after the conversion: the finish step sees the base64 form."""
    seen: list[bytes] = []

    async def sign(content: bytes) -> bytes:
        seen.append(content)
        return b"DKIM-Signature: v=1; b=stand-in\r\n" + content

    peer = FakeSmtp(extensions=("8BITMIME",))
    assert (await _send(peer, mime(), finish=sign))["code"] == 250
    assert seen == [to_seven_or_eight_bit(mime())]
    [tx] = peer.transactions
    assert tx.data.startswith(b"DKIM-Signature: v=1; b=stand-in\r\n")

    seen.clear()
    peer = FakeSmtp(extensions=BINARY_PEER)
    assert (await _send(peer, mime(), finish=sign))["code"] == 250
    assert seen == [mime()]
    assert peer.transactions[0].data == b"DKIM-Signature: v=1; b=stand-in\r\n" + mime()


async def test_eight_bit_message_still_goes_by_data_to_a_binarymime_peer() -> None:
    peer = FakeSmtp(extensions=BINARY_PEER)
    body = b"Subject: x\r\n\r\nh\xc3\xa9llo\r\n"
    assert (await _send(peer, body, Envelope("a@example.test", eight_bit=True)))["code"] == 250
    [tx] = peer.transactions
    assert b"BODY=8BITMIME" in tx.mail and tx.bdat_chunks == []
