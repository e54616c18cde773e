"""DKIM (RFC 6376) with RSA and Ed25519 (RFC 8463) on dkimpy: keys, DNS records, signing, verifying.

Pure functions over bytes; DNS comes in as an injected async TXT lookup, so smtp-edge verifies
against its configured resolver and tests against an in-memory zone. dkimpy's own
``dkim.asyncsupport`` needs aiodns (not a dependency), so :func:`verify` fetches each signature's
key record first and then runs dkimpy's synchronous verifier against those answers.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import dkim
import dkim.util
import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import (
    CanonicalizationPolicy,
    correct_empty_body,
    strip_trailing_lines,
)


class DkimAlgorithm(enum.StrEnum):
    RSA_SHA256 = "rsa-sha256"
    ED25519_SHA256 = "ed25519-sha256"

    @property
    def key_type(self) -> str:
        """The k= tag of the key record (RFC 6376 section 3.6.1, RFC 8463 section 4)."""
        return "rsa" if self is DkimAlgorithm.RSA_SHA256 else "ed25519"


RSA_BITS = 2048

# Signed header fields (RFC 6376 section 5.4.1's recommendations, minus the trace fields that
# relays rewrite). Each is signed as often as it occurs; From once more ("oversigning", section
# 8.15) so nobody can add a second From above the signed one without breaking the signature.
SIGNED_HEADERS: tuple[str, ...] = (
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
)
OVERSIGNED_HEADERS: tuple[str, ...] = ("from",)


@dataclass(frozen=True, slots=True)
class KeyPair:
    algorithm: DkimAlgorithm
    # RSA: PKCS#1 PEM; Ed25519: base64 of the 32-byte seed (what dkimpy and OpenDKIM read).
    private_key: bytes
    # The p= value of the key record: base64 DER SubjectPublicKeyInfo (RSA) or the raw 32-byte
    # public key (Ed25519, RFC 8463 section 4.2).
    public_key: str

    def __repr__(self) -> str:
        # Never let a private key reach a log line through a repr.
        return (
            f"KeyPair(algorithm={self.algorithm.value!r}, public_key={self.public_key[:16]!r}...)"
        )


class SigningKey:
    """A parsed private key with its selector; parse once, sign many times."""

    __slots__ = ("_key", "algorithm", "selector")

    def __init__(self, selector: str, algorithm: DkimAlgorithm, private_key: bytes) -> None:
        """Raises ValueError on a key that does not parse."""
        self.selector = selector
        self.algorithm = algorithm
        self._key: rsa.RSAPrivateKey | nacl.signing.SigningKey
        if algorithm is DkimAlgorithm.RSA_SHA256:
            key = serialization.load_pem_private_key(private_key, password=None)
            if not isinstance(key, rsa.RSAPrivateKey):
                raise ValueError(f"selector {selector}: not an RSA private key")
            self._key = key
        else:
            try:
                self._key = nacl.signing.SigningKey(base64.b64decode(private_key, validate=True))
            except (binascii.Error, nacl.exceptions.ValueError, TypeError) as e:
                raise ValueError(f"selector {selector}: not an Ed25519 seed") from e

    def sign_digest(self, digest: bytes) -> bytes:
        if isinstance(self._key, rsa.RSAPrivateKey):
            # RSASSA-PKCS1-v1_5 over the SHA-256 header hash (RFC 6376 section 3.3.1) in OpenSSL:
            # dkimpy's pure-Python RSA takes ~6 ms a signature, OpenSSL well under one.
            return self._key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        # RFC 8463 section 3: PureEdDSA over the SHA-256 hash.
        return bytes(self._key.sign(digest).signature)

    def __repr__(self) -> str:
        # Never let a private key reach a log line through a repr.
        return f"SigningKey(selector={self.selector!r}, algorithm={self.algorithm.value!r})"


def generate_key(algorithm: DkimAlgorithm) -> KeyPair:
    """A new key pair. RSA 2048 takes tens of milliseconds: call it off the event loop."""
    if algorithm is DkimAlgorithm.RSA_SHA256:
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return KeyPair(algorithm, private, base64.b64encode(der).decode("ascii"))
    seed = nacl.signing.SigningKey.generate()
    return KeyPair(
        algorithm,
        base64.b64encode(bytes(seed)),
        base64.b64encode(bytes(seed.verify_key)).decode("ascii"),
    )


def dns_txt_value(algorithm: DkimAlgorithm, public_key: str) -> str:
    """The TXT record at ``<selector>._domainkey.<domain>`` (RFC 6376 section 3.6.1)."""
    return f"v=DKIM1; k={algorithm.key_type}; p={public_key}"


def dns_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


# --- signing (RFC 6376 section 5) -----------------------------------------------------------

# The empty line that ends the header section; at the very start, the section is empty.
_HEADER_END = re.compile(rb"(?:\A|\r?\n)\r?\n")
_BARE_LF = re.compile(rb"\r?\n")
_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")
# Runs of WSP that are not already one SP: a lone SP is left alone, which is most of a text
# body's whitespace and what makes dkimpy's "[\t ]+" -> " " slow.
_WSP_RUN = re.compile(rb"\t[\t ]*| [\t ]+")
_RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_MAX_LINE = 76


def split_message(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """Raises ValueError on a malformed header line; else (header fields as [name, value-with-CRLF], body with CRLF line ends), as dkimpy parses it.

    Only the header section goes through dkimpy's parser; the body is converted to CRLF only
    when it has a bare LF (a message from a Unix tool), so a 100 KiB body is not split in lines.
    """
    m = _HEADER_END.search(message)
    head, body = (message, b"") if m is None else (message[: m.start()], message[m.end() :])
    try:
        headers, _ = dkim.rfc822_parse(head + b"\r\n\r\n")
    except dkim.DKIMException as e:
        raise ValueError(f"malformed header section: {e}") from e
    if body.count(b"\n") != body.count(b"\r\n"):
        body = _BARE_LF.sub(b"\r\n", body)
    return headers, body


def relaxed_body(body: bytes) -> bytes:
    """The relaxed body canonicalization (RFC 6376 section 3.4.4), byte-for-byte as dkimpy's."""
    if b" \r\n" in body or b"\t\r\n" in body:
        body = _TRAILING_WSP.sub(b"\r\n", body)
    body = _WSP_RUN.sub(b" ", body)
    result: bytes = correct_empty_body(strip_trailing_lines(body))
    return result


def _include_headers(headers: Sequence[Sequence[bytes]]) -> list[bytes]:
    names = [h[0].strip().lower() for h in headers]
    signed = [n for n in names if n.decode("ascii", "replace") in SIGNED_HEADERS]
    return signed + [n.encode("ascii") for n in OVERSIGNED_HEADERS]


def _fold_tags(tags: Sequence[bytes], first_column: int, linesep: bytes) -> bytes:
    """Join tag=value pieces with "; ", breaking lines before a piece that would pass column 76.

    Folding only ever inserts CRLF before existing whitespace (after "; " or after a ":" of
    h=, where RFC 6376 section 3.5 allows FWS), so the relaxed form of the field is unchanged.
    """
    out, column = b"", first_column
    for i, tag in enumerate(tags):
        # A ":" piece continues h= (no "; " before it); a break goes after the ";" or ":".
        sep, piece = (b":", tag[1:]) if tag.startswith(b":") else (b"; ", tag)
        if i == 0:
            sep = b""
        if i and column + len(sep) + len(piece) > _MAX_LINE:
            out += sep.rstrip() + linesep + b" "
            column = 1
        else:
            out += sep
            column += len(sep)
        out += piece
        column += len(piece)
    return out


def _h_pieces(include: Sequence[bytes]) -> list[bytes]:
    # "h=from", ":to", ":subject": the ":" pieces join without "; " (see _fold_tags).
    return [b"h=" + include[0], *(b":" + name for name in include[1:])]


def _b64_folded(data: bytes, first_column: int, linesep: bytes) -> bytes:
    text = base64.b64encode(data)
    width = _MAX_LINE - first_column
    lines = [text[:width]]
    lines += [text[i : i + _MAX_LINE - 1] for i in range(width, len(text), _MAX_LINE - 1)]
    return (linesep + b" ").join(lines)


def sign(
    message: bytes, domain: str, keys: Sequence[SigningKey], *, timestamp: int | None = None
) -> bytes:
    """DKIM-Signature header fields for ``message`` by ``domain``, one per key, to prepend.

    relaxed/relaxed, SHA-256, the fields of SIGNED_HEADERS present plus From once more. Every
    signature covers the message as given (DKIM-Signature is not in h=), so their order does not
    matter to verifiers. Raises ValueError on a message without a From field or with a
    malformed header section.
    """
    crlf = b"\r\n" in message[:4096] or b"\n" not in message
    linesep = b"\r\n" if crlf else b"\n"
    headers, body = split_message(message)
    include = _include_headers(headers)
    if include.count(b"from") == OVERSIGNED_HEADERS.count("from"):
        raise ValueError("message has no From header field (RFC 6376 section 5.4)")
    body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
    canonical = _RELAXED.canonicalize_headers(headers)
    t = str(int(time.time()) if timestamp is None else timestamp).encode("ascii")
    out = []
    for key in keys:
        tags = [
            b"v=1",
            b"a=" + key.algorithm.value.encode("ascii"),
            b"c=relaxed/relaxed",
            b"d=" + domain.encode("ascii"),
            b"s=" + key.selector.encode("ascii"),
            b"t=" + t,
            *_h_pieces(include),
            b"bh=" + body_hash,
        ]
        # b= on a line of its own, so appending the signature refolds nothing above it.
        value = b" " + _fold_tags(tags, len(b"DKIM-Signature:") + 1, linesep) + b";" + linesep
        value += b" b="
        h = hashlib.sha256()
        dkim.hash_headers(h, _RELAXED, canonical, include, (b"DKIM-Signature", value), {})
        signature = key.sign_digest(h.digest())
        out.append(b"DKIM-Signature:" + value + _b64_folded(signature, 3, linesep) + linesep)
    return b"".join(out)


# --- verification -------------------------------------------------------------------------

# RFC 8601 section 2.7.1 result values for method dkim.
DkimResultValue = Literal["pass", "fail", "neutral", "temperror", "permerror"]


class DnsTemporaryError(Exception):
    """A TXT lookup that may succeed later (timeout, SERVFAIL): the result is temperror."""


# name (absolute, with the trailing dot) -> the TXT record's strings joined, or None if the name
# has no TXT record (NXDOMAIN, NODATA). Raises DnsTemporaryError for a transient failure.
TxtLookup = Callable[[str], Awaitable[bytes | None]]


@dataclass(frozen=True, slots=True)
class DkimResult:
    result: DkimResultValue
    domain: str = ""  # d=
    selector: str = ""  # s=
    algorithm: str = ""  # a=
    # First characters of b= for Authentication-Results header.b (RFC 6008).
    header_b: str = ""
    identity: str = ""  # i=, default "@" + d= (RFC 6376 section 3.5)
    reason: str = ""


def _text(v: object) -> str:
    return v.decode("ascii", "replace") if isinstance(v, bytes) else ""


async def verify(
    message: bytes, dns_txt_lookup: TxtLookup, *, minkey: int = 1024
) -> list[DkimResult]:
    """One result per DKIM-Signature field, top to bottom (empty: dkim=none).

    RFC 6376 section 6.1: malformed tags, an expired x=, a missing or unusable key record are
    permerror (PERMFAIL); a DNS failure temperror (TEMPFAIL); a body hash or signature mismatch
    fail. Key lookups run one after another, each bounded by the lookup's own timeout.
    """
    try:
        d = dkim.DKIM(message, minkey=minkey)
    except dkim.DKIMException as e:
        # A header section dkimpy cannot split into fields: any signature in it is unusable.
        if re.search(rb"(?im)^dkim-signature[ \t]*:", _head(message)):
            return [DkimResult("permerror", reason=f"malformed header section: {e}")]
        return []
    fields = [value for name, value in d.headers if name.lower() == b"dkim-signature"]
    return [await _verify_one(d, idx, value, dns_txt_lookup) for idx, value in enumerate(fields)]


def _head(message: bytes) -> bytes:
    m = _HEADER_END.search(message)
    return message if m is None else message[: m.start()]


def _describe(value: bytes) -> dict[str, str]:
    try:
        sig = dkim.util.parse_tag_value(value)
    except dkim.util.InvalidTagValueList:
        return {}
    domain = _text(sig.get(b"d"))
    return {
        "domain": domain.lower(),
        "selector": _text(sig.get(b"s")),
        "algorithm": _text(sig.get(b"a")),
        "header_b": re.sub(r"\s+", "", _text(sig.get(b"b")))[:12],
        "identity": _text(sig.get(b"i")) or "@" + domain,
    }


async def _verify_one(d: dkim.DKIM, idx: int, value: bytes, lookup: TxtLookup) -> DkimResult:
    base = _describe(value)
    try:
        d.verify_headerprep(idx)
    except dkim.DKIMException as e:
        return DkimResult("permerror", reason=str(e), **base)
    except Exception as e:  # dkimpy lets decoding errors of hostile tag values escape
        return DkimResult("permerror", reason=f"unusable signature: {e!r}", **base)
    name = f"{base['selector']}._domainkey.{base['domain']}."
    try:
        record = await lookup(name)
    except DnsTemporaryError as e:
        return DkimResult("temperror", reason=f"key lookup: {e}", **base)
    if not record:
        return DkimResult("permerror", reason=f"no key record at {name}", **base)
    try:
        dkim.evaluate_pk(name.encode(), record)
    except (dkim.DKIMException, binascii.Error, ValueError) as e:
        # binascii.Error: a p= that is not base64 (dkimpy does not wrap it).
        return DkimResult("permerror", reason=f"bad key record: {e}", **base)

    def answer(qname: bytes, timeout: int = 5) -> bytes:
        return record

    try:
        ok = d.verify(idx, dnsfunc=answer)
    except dkim.ValidationError as e:
        return DkimResult("fail", reason=str(e), **base)
    except dkim.DKIMException as e:
        # A key under minkey, an unknown algorithm: not a forgery, an unusable signature.
        return DkimResult("permerror", reason=str(e), **base)
    except Exception as e:  # as above: hostile input must give a verdict, never a crash
        return DkimResult("permerror", reason=f"unusable signature: {e!r}", **base)
    if ok:
        return DkimResult("pass", **base)
    return DkimResult("fail", reason="signature did not verify", **base)
