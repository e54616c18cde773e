"""DKIM signing of outgoing mail (RFC 6376, RFC 8463) with the keys auth holds for each domain.

The signing domain is the author's (RFC 5322 From, or Sender when From names several), so the
signature aligns for DMARC (RFC 7489 section 3.1.1). Keys come from auth's GetDkimKeys and are
cached for a short time: a rotation reaches every delivery replica within KEY_CACHE_SECONDS.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import grpc
from prometheus_client import Counter

from postmesh.api.auth.v1 import auth_pb2
from postmesh.api.auth.v1.auth_pb2_grpc import AuthServiceStub
from postmesh.common.logging import get_logger, kv
from postmesh.common.mailauth import dkim
from postmesh.common.mailauth.headers import author_domain

log = get_logger(__name__)

SIGNED = Counter(
    "postmesh_delivery_dkim_messages_total",
    "Outgoing messages by DKIM signing outcome (signed, not_local, no_keys, malformed).",
    ["outcome"],
)

# How long auth's answer for a domain is reused (keys and "not a local domain" alike).
KEY_CACHE_SECONDS = 60.0
# A cached answer this old is still used while auth is unreachable: signing with last
# minute's key beats sending unsigned mail that fails DMARC, or holding the queue.
STALE_SECONDS = 3600.0
# Signing is ~0.5 ms for a small message and a few ms at 100 KiB (body canonicalization); above
# this size it runs in a worker thread so one large message does not stall the event loop.
INLINE_LIMIT = 64 * 1024
CACHE_SIZE = 10_000

_ALGORITHMS = {
    auth_pb2.DKIM_ALGORITHM_RSA_SHA256: dkim.DkimAlgorithm.RSA_SHA256,
    auth_pb2.DKIM_ALGORITHM_ED25519_SHA256: dkim.DkimAlgorithm.ED25519_SHA256,
}


class DkimUnavailable(Exception):
    """Auth could not be asked for the domain's keys and nothing usable is cached: a temporary
    failure; the caller defers the message (4.3.0) rather than send it unsigned."""


@dataclass(frozen=True, slots=True)
class _Entry:
    fetched: float
    domain: str  # canonical d=
    keys: tuple[dkim.SigningKey, ...]
    local: bool


class DkimSigner:
    def __init__(self, auth_stub: AuthServiceStub, deadline_seconds: float) -> None:
        self._auth = auth_stub
        self._deadline = deadline_seconds
        self._cache: dict[str, _Entry] = {}
        # One GetDkimKeys in flight per domain however many messages wait for it.
        self._inflight: dict[str, asyncio.Task[_Entry]] = {}

    async def sign(self, message: bytes) -> bytes:
        """The message with DKIM-Signature fields prepended, or unchanged when its author domain
        is not a local domain with keys (or it has no usable From). Raises DkimUnavailable."""
        domain = author_domain(message)
        if domain is None:
            SIGNED.labels("malformed").inc()
            return message
        entry = await self._keys(domain)
        if not entry.local or not entry.keys:
            SIGNED.labels("not_local" if not entry.local else "no_keys").inc()
            return message
        try:
            if len(message) > INLINE_LIMIT:
                headers = await asyncio.to_thread(dkim.sign, message, entry.domain, entry.keys)
            else:
                headers = dkim.sign(message, entry.domain, entry.keys)
        except ValueError as e:
            # Unparseable header section: such a message cannot carry a valid signature anyway.
            log.warning("message not signed", extra=kv(domain=domain, reason=str(e)))
            SIGNED.labels("malformed").inc()
            return message
        SIGNED.labels("signed").inc()
        return headers + message

    async def _keys(self, domain: str) -> _Entry:
        cached = self._cache.get(domain)
        if cached is not None and time.monotonic() - cached.fetched < KEY_CACHE_SECONDS:
            return cached
        task = self._inflight.get(domain)
        if task is None:
            task = asyncio.create_task(self._refresh(domain, cached))
            self._inflight[domain] = task
            task.add_done_callback(lambda t: self._done(domain, t))
        # shield: a cancelled sender must not cancel the lookup others are waiting for.
        return await asyncio.shield(task)

    def _done(self, domain: str, task: asyncio.Task[_Entry]) -> None:
        self._inflight.pop(domain, None)
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning when nobody waited

    async def _refresh(self, domain: str, cached: _Entry | None) -> _Entry:
        try:
            entry = await self._fetch(domain)
        except DkimUnavailable as e:
            if cached is not None and time.monotonic() - cached.fetched < STALE_SECONDS:
                log.warning(
                    "auth unreachable, signing with cached keys",
                    extra=kv(domain=domain, reason=str(e)),
                )
                return cached
            raise
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()  # From domains of relayed mail are unbounded; keep it simple
        self._cache[domain] = entry
        return entry

    async def _fetch(self, domain: str) -> _Entry:
        try:
            resp = await self._auth.GetDkimKeys(
                auth_pb2.GetDkimKeysRequest(domain=domain), timeout=self._deadline
            )
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
                # Not a domain name auth accepts: certainly not one of ours.
                return _Entry(time.monotonic(), domain, (), False)
            raise DkimUnavailable(f"GetDkimKeys({domain}): {e.code().name}") from e
        keys = []
        for k in resp.keys:
            algorithm = _ALGORITHMS.get(k.algorithm)
            if algorithm is None:
                continue  # an algorithm added to auth after this build: skip, sign with the rest
            try:
                keys.append(dkim.SigningKey(k.selector, algorithm, k.private_key))
            except ValueError as e:
                log.error("unusable dkim key", extra=kv(domain=domain, reason=str(e)))
        # RSA first: it ends up topmost, for verifiers that look at one signature only.
        keys.sort(key=lambda k: k.algorithm is not dkim.DkimAlgorithm.RSA_SHA256)
        return _Entry(time.monotonic(), resp.domain or domain, tuple(keys), resp.local_domain)
