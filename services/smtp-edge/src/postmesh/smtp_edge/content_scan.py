"""The optional content scan: rspamd's HTTP protocol (``POST /checkv2``), and what its answer
means for the message being received.

Off unless POSTMESH_SMTP_RSPAMD_URL is set. rspamd answers with an action; as rspamd's own
milter does for Postfix, ``reject`` refuses the message (550 5.7.1), ``soft reject`` and
``greylist`` defer it (451 4.7.1), ``rewrite subject`` and ``add header`` accept it marked as
spam (``X-Spam: Yes``, filed into the spam mailbox for local recipients), ``no action`` accepts
it. Every scanned message gets an ``X-Spam-Status`` header; any ``X-Spam``/``X-Spam-Status`` a
sender wrote is removed first, so a filter rule on them can trust them.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import aiohttp

from postmesh.common.logging import get_logger, kv
from postmesh.common.mailauth.authresults import header_fields, split_message
from postmesh.smtp_edge import metrics

log = get_logger(__name__)

# Header fields we own on scanned mail: a sender's copies are removed (a forged "X-Spam: No"
# must not get past a filter rule).
OWN_FIELDS = (b"x-spam", b"x-spam-status")
# What a reply may carry from rspamd's smtp_message: printable ASCII, bounded.
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")
MAX_REPLY_TEXT = 200


class Action(StrEnum):
    REJECT = "reject"
    SOFT_REJECT = "soft reject"
    GREYLIST = "greylist"
    REWRITE_SUBJECT = "rewrite subject"
    ADD_HEADER = "add header"
    NO_ACTION = "no action"


class ScanFailed(Exception):
    """rspamd could not be asked or gave no usable answer."""


@dataclass(frozen=True, slots=True)
class ScanRequest:
    queue_id: str
    client_ip: str
    helo: str
    client_name: str  # the client's verified reverse DNS name, "" if none
    mail_from: str
    recipients: list[str]
    user: str  # the authenticated user, "" if none


@dataclass(frozen=True, slots=True)
class ScanResult:
    action: Action
    score: float
    required: float
    subject: str = ""  # the rewritten Subject (rewrite subject)
    message: str = ""  # rspamd's smtp_message, for the reply
    symbols: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the edge does with the message: a reply that refuses or defers it, or the
    message as it is to be queued and the mailbox local delivery files it into."""

    reply: str = ""
    content: bytes = b""
    spam: bool = False


def parse_result(data: Any) -> ScanResult:
    """rspamd's /checkv2 JSON answer (https://rspamd.com/doc/architecture/protocol.html)."""
    if not isinstance(data, dict):
        raise ScanFailed("answer is not a JSON object")
    try:
        action = Action(str(data.get("action")))
    except ValueError:
        raise ScanFailed(f"unknown action {data.get('action')!r}") from None
    messages = data.get("messages")
    smtp_message = messages.get("smtp_message", "") if isinstance(messages, dict) else ""
    symbols = data.get("symbols")
    try:
        return ScanResult(
            action,
            float(data.get("score", 0.0)),
            float(data.get("required_score", 0.0)),
            str(data.get("subject") or ""),
            str(smtp_message or ""),
            sorted(symbols) if isinstance(symbols, dict) else [],
        )
    except (TypeError, ValueError) as e:
        raise ScanFailed(f"malformed answer: {e}") from None


def request_headers(req: ScanRequest) -> list[tuple[str, str]]:
    """The envelope and client facts rspamd scores with (its HTTP protocol's headers)."""
    headers = [
        ("Queue-Id", req.queue_id),
        ("IP", req.client_ip),
        ("Helo", req.helo),
        ("From", req.mail_from),
        *(("Rcpt", r) for r in req.recipients),
    ]
    if req.client_name:
        headers.append(("Hostname", req.client_name))
    if req.user:
        headers.append(("User", req.user))
    # Header values must be one line; SMTP arguments are already, this is belt and braces.
    return [(k, _UNPRINTABLE.sub(" ", v)) for k, v in headers if v or k == "From"]


class RspamdScanner:
    """One HTTP client to one rspamd (normal worker or proxy in self-scan mode)."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url.rstrip("/") + "/checkv2"
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def scan(self, req: ScanRequest, content: bytes) -> ScanResult:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        started = time.monotonic()
        try:
            async with self._session.post(
                self.url, data=content, headers=request_headers(req)
            ) as resp:
                if resp.status != 200:
                    raise ScanFailed(f"rspamd answered HTTP {resp.status}")
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise ScanFailed(f"rspamd at {self.url}: {e!r}") from None
        finally:
            metrics.CONTENT_SCAN_SECONDS.observe(time.monotonic() - started)
        return parse_result(data)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def reply_text(result: ScanResult, default: str) -> str:
    text = _UNPRINTABLE.sub(" ", result.message).strip()[:MAX_REPLY_TEXT]
    return text or default


def apply(result: ScanResult, content: bytes) -> Outcome:
    """The edge's decision on a scanned message (content: header and body, CRLF lines)."""
    if result.action is Action.REJECT:
        return Outcome(reply="550 5.7.1 " + reply_text(result, "Message rejected as spam"))
    if result.action is Action.SOFT_REJECT:
        return Outcome(reply="451 4.7.1 " + reply_text(result, "Try again later"))
    if result.action is Action.GREYLIST:
        return Outcome(reply="451 4.7.1 Greylisted, please try again later")
    spam = result.action in (Action.ADD_HEADER, Action.REWRITE_SUBJECT)
    status = (
        f"X-Spam-Status: {'Yes' if spam else 'No'}, score={result.score:.2f}"
        f" required={result.required:.2f}"
    )
    if result.symbols:
        status += "\r\n\ttests=" + ",".join(_UNPRINTABLE.sub("", s) for s in result.symbols)
    added = status.encode() + b"\r\n" + (b"X-Spam: Yes\r\n" if spam else b"")
    content = remove_fields(content, OWN_FIELDS)
    if result.action is Action.REWRITE_SUBJECT and result.subject:
        content = replace_subject(content, result.subject)
    return Outcome(content=added + content, spam=spam)


def remove_fields(content: bytes, names: tuple[bytes, ...]) -> bytes:
    """``content`` without the header fields named (folded continuation lines included)."""
    header, rest = split_message(content)
    kept = [f for f in header_fields(header) if f.split(b":", 1)[0].strip().lower() not in names]
    return b"".join(kept) + rest


def encode_subject(subject: str) -> bytes:
    """An unstructured field value: as is when ASCII, else RFC 2047 encoded words of at most
    75 characters each (RFC 2047 section 2), on folded lines."""
    clean = " ".join(subject.splitlines())
    if clean.isascii():
        return _UNPRINTABLE.sub(" ", clean).encode()
    words, chunk = [], ""
    for ch in clean:
        if len((chunk + ch).encode()) > 45:  # 45 bytes -> 60 base64 characters + 12 framing
            words.append(chunk)
            chunk = ""
        chunk += ch
    words.append(chunk)
    return b"\r\n ".join(b"=?UTF-8?B?" + base64.b64encode(w.encode()) + b"?=" for w in words)


def replace_subject(content: bytes, subject: str) -> bytes:
    """``content`` with its Subject field (all of them, RFC 5322 allows one) replaced."""
    stripped = remove_fields(content, (b"subject",))
    return b"Subject: " + encode_subject(subject) + b"\r\n" + stripped


async def scan_message(
    scanner: RspamdScanner, req: ScanRequest, content: bytes, *, fail_open: bool
) -> Outcome:
    """Ask rspamd and decide; when rspamd cannot answer, accept unscanned (fail_open) or
    defer (451 4.7.1). Counted by action, "error" for failures."""
    try:
        result = await scanner.scan(req, content)
    except asyncio.CancelledError:
        raise
    except ScanFailed as e:
        metrics.CONTENT_SCANS.labels("error").inc()
        log.warning(
            "content scan failed",
            extra=kv(queue_id=req.queue_id, error=str(e), fail_open=fail_open),
        )
        if fail_open:
            return Outcome(content=content)
        return Outcome(reply="451 4.7.1 Content scan unavailable, please try again later")
    metrics.CONTENT_SCANS.labels(result.action.value).inc()
    log.info(
        "content scanned",
        extra=kv(
            queue_id=req.queue_id, action=result.action.value, score=result.score,
            symbols=",".join(result.symbols[:20]),
        ),
    )  # fmt: skip
    return apply(result, content)
