"""ARC chain validation (RFC 8617 §5.2) with dkimpy, keys fetched as for DKIM
(:func:`postmesh.common.mailauth.dkim_verify.fetch_keys`)."""

from __future__ import annotations

from dataclasses import dataclass

import dkim

from postmesh.common.mailauth.dkim_verify import (
    MIN_KEY_BITS,
    QUIET_LOG,
    KeyRecord,
    dnsfunc_from,
    fetch_keys,
    key_name,
    parse_tags,
    run_dkimpy,
    signature_headers,
)
from postmesh.common.mailauth.dnsclient import Resolver

# RFC 8617 §4.2.1: at most 50 ARC sets; validation stops well before that matters.
MAX_ARC_SETS = 50


@dataclass(frozen=True, slots=True)
class ArcResult:
    """``result``: none (no ARC sets), pass, fail (RFC 8617 §5.2, §7.2 "cv"); temperror when a
    key could not be fetched. ``instances`` is how many sets the chain has."""

    result: str
    instances: int = 0
    reason: str = ""


async def verify_arc(resolver: Resolver, message: bytes) -> ArcResult:
    values = signature_headers(message, (b"arc-seal", b"arc-message-signature"))
    if not values:
        return ArcResult("none")
    if len(values) > 2 * MAX_ARC_SETS:
        return ArcResult("fail", reason="too many ARC sets")
    names = {n for n in (key_name(parse_tags(v)) for v in values) if n}
    keys = await fetch_keys(resolver, names)
    if any(k.temperror for k in keys.values()):
        return ArcResult("temperror", reason="key lookup timed out")
    # Each seal and signature verifies the message.
    return await run_dkimpy(len(message) * len(values), _validate, message, keys)


def _validate(message: bytes, keys: dict[str, KeyRecord]) -> ArcResult:
    a = dkim.ARC(message, logger=QUIET_LOG, minkey=MIN_KEY_BITS)
    try:
        cv, sets, reason = a.verify(dnsfunc=dnsfunc_from(keys))
    except dkim.DKIMException as e:
        return ArcResult("fail", reason=str(e)[:200])
    except Exception as e:  # a chain that breaks dkimpy itself does not validate
        return ArcResult("fail", reason=f"unverifiable chain ({type(e).__name__})")
    n = len(sets)
    if cv == dkim.CV_Pass:
        return ArcResult("pass", n)
    if cv == dkim.CV_None:
        return ArcResult("none", n, str(reason))
    # CV_Fail, or None: a seal in the chain already said fail (RFC 8617 §5.2 step 2).
    return ArcResult("fail", n, str(reason))
