"""DKIM verification (RFC 6376) of every signature on a message, RSA and Ed25519 (RFC 8463),
with dkimpy doing the cryptography and our asynchronous resolver fetching the keys.

dkimpy looks keys up through a synchronous ``dnsfunc``. Here every key the message's
signatures (and ARC sets, :mod:`.arc`) name is fetched first, concurrently and with timeouts;
dkimpy then runs with a ``dnsfunc`` that only reads what was fetched: on the event loop while
the message's size times its signatures is at most ``INLINE_BYTES``, in a worker thread above
(ADR 79). A key lookup that timed out makes that signature ``temperror`` without asking
dkimpy."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import dkim
from dkim.util import parse_tag_value

from postmesh.common.mailauth.dnsclient import DnsTempError, Resolver
from postmesh.common.mailauth.headers import header_section

# RFC 6376 §6.1: a verifier may limit the signatures it checks (a DoS bound).
MAX_SIGNATURES = 10
# RFC 8301 §3.2: keys under 1024 bits must not be considered valid.
MIN_KEY_BITS = 1024
# dkimpy holds the GIL while it canonicalises, so a worker thread spares the event loop only
# a verification longer than the interpreter's 5 ms switch interval. Up to this many bytes
# verified (the message once per signature; ~2 ms on the team's machine), its hand-offs cost
# more than they spare (ADR 79).
INLINE_BYTES = 128 * 1024
_WSP = re.compile(rb"\s+")
_T = TypeVar("_T")
# dkimpy logs every failure at ERROR; they are results here, not our errors.
QUIET_LOG = logging.getLogger("postmesh.mailauth.dkimpy")
QUIET_LOG.setLevel(logging.CRITICAL)


@dataclass(frozen=True, slots=True)
class DkimResult:
    """One signature's result (RFC 8601 §2.7.1): pass, fail, neutral, temperror, permerror.
    ``b`` is the start of the signature, which tells signatures of one domain apart (RFC 6008)."""

    result: str
    domain: str = ""
    selector: str = ""
    b: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class KeyRecord:
    txt: bytes | None  # None: no record (NXDOMAIN or no TXT)
    temperror: bool = False


def parse_tags(value: bytes) -> dict[bytes, bytes]:
    try:
        tags: dict[bytes, bytes] = parse_tag_value(_WSP.sub(b"", value))
    except dkim.DKIMException:
        return {}
    except Exception:  # dkimpy raises its own tag errors, not all DKIMExceptions
        return {}
    return tags


def key_name(tags: dict[bytes, bytes]) -> str | None:
    s, d = tags.get(b"s"), tags.get(b"d")
    if not s or not d:
        return None
    return f"{s.decode('ascii', 'replace')}._domainkey.{d.decode('ascii', 'replace')}".lower()


def signature_headers(message: bytes, names: tuple[bytes, ...]) -> list[bytes]:
    """The values of the header fields called ``names`` (lower case), in order.

    Only the header section is parsed: dkimpy's parser splits the whole message into lines and
    joins the body again (~2 ms for 100 KiB, twice per message: DKIM and ARC), and most
    messages have no signature at all. The section ends at the first empty line, with LF or
    CRLF, where dkimpy's parser stops too, so the fields are the same."""
    try:
        headers, _ = dkim.rfc822_parse(header_section(message))
    except Exception:  # DKIMException, or dkimpy's own IndexError on a leading folded line
        return []
    return [value for name, value in headers if name.lower() in names]


async def fetch_keys(resolver: Resolver, names: set[str]) -> dict[str, KeyRecord]:
    async def one(name: str) -> KeyRecord:
        try:
            answer = await resolver.query(name, "TXT")
        except DnsTempError:
            return KeyRecord(None, temperror=True)
        # RFC 6376 §3.6.2.2: several TXT records at a key name make the key unusable.
        if len(answer.values) != 1:
            return KeyRecord(None)
        return KeyRecord(answer.values[0].encode("utf-8", "surrogateescape"))

    ordered = sorted(names)
    keys = await asyncio.gather(*(one(n) for n in ordered))
    return dict(zip(ordered, keys, strict=True))


def dnsfunc_from(keys: dict[str, KeyRecord]) -> Any:
    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        key = keys.get(text.rstrip(".").lower())
        return key.txt if key is not None else None

    return dnsfunc


def _verify_one(message: bytes, idx: int, keys: dict[str, KeyRecord]) -> tuple[str, str]:
    d = dkim.DKIM(message, logger=QUIET_LOG, minkey=MIN_KEY_BITS)
    try:
        ok = d.verify(idx=idx, dnsfunc=dnsfunc_from(keys))
    except dkim.ValidationError as e:
        # dkimpy reports a body hash mismatch as a ValidationError, like malformed fields;
        # it is a failed verification (RFC 6376 §6.1.3), not a broken signature.
        if str(e).startswith("body hash mismatch"):
            return "fail", "body hash did not verify"
        return "permerror", str(e)[:200]
    except dkim.DKIMException as e:
        return "permerror", str(e)[:200]
    except Exception as e:
        # A signature that breaks dkimpy itself is malformed: a permanent error of this
        # signature (RFC 6376 §6.1), never a reason to skip the checks of the message.
        return "permerror", f"unverifiable signature ({type(e).__name__})"
    if ok:
        return "pass", ""
    return "fail", "signature did not verify"


async def run_dkimpy(verified_bytes: int, work: Callable[..., _T], *args: Any) -> _T:
    """``work`` (dkimpy) on the event loop up to ``INLINE_BYTES`` verified, else in a worker
    thread (ADR 79)."""
    if verified_bytes <= INLINE_BYTES:
        return work(*args)
    return await asyncio.to_thread(work, *args)


async def verify_dkim(resolver: Resolver, message: bytes) -> list[DkimResult]:
    """One result per DKIM-Signature field, topmost first; empty when there are none."""
    values = signature_headers(message, (b"dkim-signature",))[:MAX_SIGNATURES]
    sigs = [parse_tags(v) for v in values]
    names = {n for n in (key_name(t) for t in sigs) if n}
    keys = await fetch_keys(resolver, names)
    verified = len(message) * len(sigs)  # the message is verified once per signature
    results: list[DkimResult] = []
    for idx, tags in enumerate(sigs):
        domain = tags.get(b"d", b"").decode("ascii", "replace").lower()
        selector = tags.get(b"s", b"").decode("ascii", "replace")
        b = tags.get(b"b", b"")[:8].decode("ascii", "replace")
        name = key_name(tags)
        if name is None:
            results.append(DkimResult("permerror", domain, selector, b, "malformed signature"))
            continue
        key = keys[name]
        if key.temperror:
            results.append(DkimResult("temperror", domain, selector, b, "key lookup timed out"))
            continue
        if key.txt is None:
            # RFC 6376 §6.1.2: no key record is a permanent failure.
            results.append(DkimResult("permerror", domain, selector, b, "no key"))
            continue
        result, reason = await run_dkimpy(verified, _verify_one, message, idx, keys)
        results.append(DkimResult(result, domain, selector, b, reason))
    return results
