"""DKIM signing and verification (postmesh.common.mailauth.dkim) against dkimpy's own verifier
and signer, so our signatures and verdicts are what an independent implementation says."""

from __future__ import annotations

import re

import dkim as dkimpy
import pytest
from dkim.canonicalization import CanonicalizationPolicy
from hypothesis import given, settings
from hypothesis import strategies as st

from postmesh.common.mailauth import dkim
from postmesh.common.mailauth.headers import author_domain

DOMAIN = "example.test"

MESSAGE = (
    b"Received: from a by b; Fri, 4 Dec 2026 10:00:00 +0000\r\n"
    b"From: Alice <alice@example.test>\r\n"
    b"To: Bob <bob@remote.test>\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"Date: Fri, 4 Dec 2026 10:00:00 +0000\r\n"
    b"Message-ID: <1@example.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b".a line starting with a dot\r\n"
    b"..two dots\r\n"
    b".\r\n"
    b"8-bit: Gr\xc3\xbc\xc3\x9fe, \xe2\x82\xac  \t spaces\t \r\n"
    b"\r\n"
    b"\r\n"
)


@pytest.fixture(scope="module")
def keys() -> dict[dkim.DkimAlgorithm, tuple[dkim.KeyPair, dkim.SigningKey]]:
    out = {}
    for algorithm, selector in (
        (dkim.DkimAlgorithm.RSA_SHA256, "rsa1"),
        (dkim.DkimAlgorithm.ED25519_SHA256, "ed1"),
    ):
        pair = dkim.generate_key(algorithm)
        out[algorithm] = (pair, dkim.SigningKey(selector, algorithm, pair.private_key))
    return out


def zone(
    keys: dict[dkim.DkimAlgorithm, tuple[dkim.KeyPair, dkim.SigningKey]],
) -> dict[str, bytes]:
    return {
        f"{k.selector}._domainkey.{DOMAIN}.": dkim.dns_txt_value(a, p.public_key).encode()
        for a, (p, k) in keys.items()
    }


def dnsfunc(records: dict[str, bytes]):  # type: ignore[no-untyped-def]
    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name.decode())

    return lookup


def lookup(records: dict[str, bytes]) -> dkim.TxtLookup:
    async def txt(name: str) -> bytes | None:
        return records.get(name)

    return txt


def all_signing_keys(
    keys: dict[dkim.DkimAlgorithm, tuple[dkim.KeyPair, dkim.SigningKey]],
) -> list[dkim.SigningKey]:
    return [k for _, k in keys.values()]


@pytest.mark.parametrize("algorithm", list(dkim.DkimAlgorithm))
@pytest.mark.parametrize("linesep", [b"\r\n", b"\n"])
def test_signature_verifies_with_dkimpy(
    keys: dict[dkim.DkimAlgorithm, tuple[dkim.KeyPair, dkim.SigningKey]],
    algorithm: dkim.DkimAlgorithm,
    linesep: bytes,
) -> None:
    message = MESSAGE.replace(b"\r\n", linesep)
    headers = dkim.sign(message, DOMAIN, [keys[algorithm][1]], timestamp=1_700_000_000)
    assert headers.startswith(b"DKIM-Signature:") and headers.endswith(linesep)
    # Folded at 76 columns with the message's own line ends.
    assert all(len(line) <= 78 for line in headers.split(linesep))
    signed = headers + message
    assert dkimpy.verify(signed, dnsfunc=dnsfunc(zone(keys)))
    tags = dkimpy.util.parse_tag_value(re.sub(rb"\r?\n", b"", headers.split(b":", 1)[1]))
    assert tags[b"a"] == algorithm.value.encode() and tags[b"c"] == b"relaxed/relaxed"
    assert tags[b"d"] == DOMAIN.encode() and tags[b"t"] == b"1700000000"
    # RFC 6376 section 5.4: the recommended fields present, From signed once more than it
    # occurs (oversigned), the trace field Received not signed.
    h = [n.strip() for n in tags[b"h"].split(b":")]
    assert h == [
        b"from",
        b"to",
        b"subject",
        b"date",
        b"message-id",
        b"mime-version",
        b"content-type",
        b"content-transfer-encoding",
        b"from",
    ]


async def test_both_signatures_verify_with_dkimpy_and_our_verify(
    keys: dict[dkim.DkimAlgorithm, tuple[dkim.KeyPair, dkim.SigningKey]],
) -> None:
    signed = dkim.sign(MESSAGE, DOMAIN, all_signing_keys(keys)) + MESSAGE
    d = dkimpy.DKIM(signed)
    assert d.verify(0, dnsfunc=dnsfunc(zone(keys))) and d.verify(1, dnsfunc=dnsfunc(zone(keys)))
    results = await dkim.verify(signed, lookup(zone(keys)))
    assert [(r.result, r.algorithm, r.selector, r.domain) for r in results] == [
        ("pass", "rsa-sha256", "rsa1", DOMAIN),
        ("pass", "ed25519-sha256", "ed1", DOMAIN),
    ]
    assert results[0].identity == "@" + DOMAIN and len(results[0].header_b) == 12


async def test_dkimpy_signatures_verify_with_our_verify(
    keys: dict[dkim.DkimAlgorithm, tuple[dkim.KeyPair, dkim.SigningKey]],
) -> None:
    # What smtp-edge receives from other signers: dkimpy's own, simple and relaxed.
    rsa_pair, _ = keys[dkim.DkimAlgorithm.RSA_SHA256]
    ed_pair, _ = keys[dkim.DkimAlgorithm.ED25519_SHA256]
    for canon in (b"simple/simple", b"relaxed/relaxed", b"relaxed/simple"):
        sig = dkimpy.sign(
            MESSAGE,
            b"rsa1",
            DOMAIN.encode(),
            rsa_pair.private_key,
            canonicalize=tuple(canon.split(b"/")),
        )
        sig_ed = dkimpy.sign(
            MESSAGE,
            b"ed1",
            DOMAIN.encode(),
            ed_pair.private_key,
            canonicalize=tuple(canon.split(b"/")),
            signature_algorithm=b"ed25519-sha256",
        )
        results = await dkim.verify(sig_ed + sig + MESSAGE, lookup(zone(keys)))
        assert [r.result for r in results] == ["pass", "pass"], canon


async def test_tampering_fails(
    keys: dict[dkim.DkimAlgorithm, tuple[dkim.KeyPair, dkim.SigningKey]],
) -> None:
    headers = dkim.sign(MESSAGE, DOMAIN, all_signing_keys(keys))
    records = lookup(zone(keys))
    body_changed = headers + MESSAGE.replace(b"Hello Bob", b"Hello Eve")
    subject_changed = headers + MESSAGE.replace(b"Subject: =?utf-8", b"Subject: =?UTF-8")
    # A second From above the signed one: oversigning makes it break the signature.
    from_added = headers + b"From: Mallory <m@evil.test>\r\n" + MESSAGE
    for message in (body_changed, subject_changed, from_added):
        assert [r.result for r in await dkim.verify(message, records)] == ["fail", "fail"]
        assert not dkimpy.verify(message, dnsfunc=dnsfunc(zone(keys)))
    # Relaxed canonicalization: whitespace changes and header case are not tampering.
    rewhitespaced = headers + MESSAGE.replace(b"Subject: ", b"subject:   ").replace(
        b"Hello Bob,", b"Hello  Bob,"
    )
    assert [r.result for r in await dkim.verify(rewhitespaced, records)] == ["pass", "pass"]


async def test_verify_results_for_missing_keys_dns_failures_and_garbage(
    keys: dict[dkim.DkimAlgorithm, tuple[dkim.KeyPair, dkim.SigningKey]],
) -> None:
    signed = dkim.sign(MESSAGE, DOMAIN, [keys[dkim.DkimAlgorithm.RSA_SHA256][1]]) + MESSAGE
    assert await dkim.verify(MESSAGE, lookup({})) == []
    (r,) = await dkim.verify(signed, lookup({}))
    assert r.result == "permerror" and "no key record" in r.reason

    async def failing(name: str) -> bytes | None:
        raise dkim.DnsTemporaryError("SERVFAIL")

    (r,) = await dkim.verify(signed, failing)
    assert r.result == "temperror"
    name = f"rsa1._domainkey.{DOMAIN}."
    (r,) = await dkim.verify(signed, lookup({name: b"v=DKIM1; k=rsa; p=!!notbase64"}))
    assert r.result == "permerror"
    # A revoked key (empty p=, RFC 6376 section 3.6.1).
    (r,) = await dkim.verify(signed, lookup({name: b"v=DKIM1; k=rsa; p="}))
    assert r.result == "permerror"
    garbage = b"DKIM-Signature: v=1; a=rsa-sha256; d=\r\n" + MESSAGE
    (r,) = await dkim.verify(garbage, lookup({}))
    assert r.result == "permerror"
    # The Ed25519 key record verifies the RSA signature: algorithm mismatch, never a pass.
    ed_record = zone(keys)[f"ed1._domainkey.{DOMAIN}."]
    (r,) = await dkim.verify(signed, lookup({name: ed_record}))
    assert r.result in ("fail", "permerror")


def test_sign_refuses_a_message_without_from(
    keys: dict[dkim.DkimAlgorithm, tuple[dkim.KeyPair, dkim.SigningKey]],
) -> None:
    with pytest.raises(ValueError, match="From"):
        dkim.sign(b"Subject: x\r\n\r\nbody\r\n", DOMAIN, all_signing_keys(keys))
    with pytest.raises(ValueError):
        dkim.sign(b"From a@b.test no colon\r\n\r\nbody\r\n", DOMAIN, all_signing_keys(keys))


def test_key_records_and_reprs(
    keys: dict[dkim.DkimAlgorithm, tuple[dkim.KeyPair, dkim.SigningKey]],
) -> None:
    pair, key = keys[dkim.DkimAlgorithm.ED25519_SHA256]
    assert (
        dkim.dns_txt_value(pair.algorithm, pair.public_key)
        == f"v=DKIM1; k=ed25519; p={pair.public_key}"
    )
    assert dkim.dns_name("s1", DOMAIN) == "s1._domainkey.example.test"
    for obj in (pair, key, *keys[dkim.DkimAlgorithm.RSA_SHA256]):
        assert b"PRIVATE" not in repr(obj).encode()
        assert pair.private_key.decode() not in repr(obj)
    with pytest.raises(ValueError):
        dkim.SigningKey("x", dkim.DkimAlgorithm.ED25519_SHA256, b"not base64!")
    with pytest.raises(ValueError):
        dkim.SigningKey("x", dkim.DkimAlgorithm.RSA_SHA256, b"-----BEGIN nothing")


_RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([b"a", b" ", b"\t", b"\r\n", b"x y", b".", b"\xc3\xa9"]), max_size=40)
)
def test_relaxed_body_matches_dkimpy(parts: list[bytes]) -> None:
    body = b"".join(parts)
    assert dkim.relaxed_body(body) == _RELAXED.canonicalize_body(body)


def test_author_domain() -> None:
    assert author_domain(MESSAGE) == DOMAIN
    assert author_domain(b"From: A <a@Example.TEST>\r\n\r\n") == "example.test"
    # Several authors: the Sender's domain (RFC 5322 section 3.6.2).
    two = b"From: a@one.test, b@two.test\r\nSender: b@two.test\r\n\r\nx"
    assert author_domain(two) == "two.test"
    assert author_domain(b"Subject: none\r\n\r\n") is None
    assert author_domain(b"From: undisclosed\r\n\r\n") is None
    assert author_domain(b"From: \xff\xfe@@\r\n\r\n") is None


_TAG = st.sampled_from(
    [
        b"v=1",
        b"a=rsa-sha256",
        b"a=ed25519-sha256",
        b"a=x",
        b"d=example.test",
        b"s=rsa1",
        b"h=from",
        b"h=",
        b"bh=",
        b"bh=!!",
        b"b=AAAA",
        b"b=",
        b"x=1",
        b"t=9",
        b"l=-1",
        b"l=99",
        b"c=relaxed/simple",
        b"c=bogus",
        b"i=@other.test",
        b"q=dns/txt",
        b"=",
        b";",
        b"\xff",
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_TAG, max_size=12), st.sampled_from([b"", b"\r\n", b"\r\n\r\n", b"x\r\n"]))
async def test_verify_never_raises_on_garbage_signatures(tags: list[bytes], tail: bytes) -> None:
    message = b"DKIM-Signature: " + b"; ".join(tags) + b"\r\n" + MESSAGE + tail
    results = await dkim.verify(message, lookup({f"rsa1._domainkey.{DOMAIN}.": b"v=DKIM1; p=AAAA"}))
    assert len(results) == 1 and results[0].result in ("permerror", "fail")
    # A header section dkimpy cannot parse at all.
    assert [
        r.result for r in await dkim.verify(b"DKIM-Signature: x\r\n\x00bad\r\n\r\n", lookup({}))
    ] in (
        [],
        ["permerror"],
    )
