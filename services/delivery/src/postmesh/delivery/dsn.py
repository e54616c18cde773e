"""Delivery status notifications: RFC 3464 multipart/report (RFC 6522) to the envelope sender,
honouring RFC 3461 NOTIFY, RET, ENVID and ORCPT, and RFC 8689 §5 for REQUIRETLS messages."""

from __future__ import annotations

import email.policy
import email.utils
import hashlib
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

from postmesh.api.events.v1 import events_pb2
from postmesh.delivery.model import Outcome, RecipientResult

# Headers of the original are returned for RET=HDRS and, as Postfix does, when the message is
# too large to return whole.
MAX_RETURNED_BYTES = 512 * 1024

_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZ"  # as postmesh.common.ids
_XTEXT = re.compile(r"\+([0-9A-F]{2})")

# RFC 3464 §2.3.3 Action per outcome, and the NOTIFY keyword (RFC 3461 §4.1) that asks for it.
_ACTION = {
    Outcome.BOUNCED: ("failed", "FAILURE"),
    Outcome.DEFERRED: ("delayed", "DELAY"),
    Outcome.DELIVERED: ("delivered", "SUCCESS"),
    Outcome.RELAYED: ("relayed", "SUCCESS"),
    Outcome.QUEUED: ("delayed", "DELAY"),
}


# RFC 3461 §4.1: "the absence of a NOTIFY parameter in a RCPT command may be interpreted as
# either NOTIFY=FAILURE or NOTIFY=FAILURE,DELAY". The latter, as Postfix (dsn_mask.h) and
# sendmail: a sender who asked nothing hears of failures and of long delays, never of success.
DEFAULT_NOTIFY = frozenset({"FAILURE", "DELAY"})


def wants_notice(
    msg: events_pb2.InboundMessage, rcpt: events_pb2.Recipient, outcome: Outcome
) -> bool:
    """No report to the null reverse path (RFC 5321 §4.5.5, RFC 3464 §2), which every report
    itself has. Without NOTIFY, failures and delays are reported (DEFAULT_NOTIFY); NEVER
    suppresses all."""
    if not msg.mail_from:
        return False
    notify = {n.upper() for n in rcpt.notify} or DEFAULT_NOTIFY
    return _ACTION[outcome][1] in notify


def wants_failure_notice(msg: events_pb2.InboundMessage, rcpt: events_pb2.Recipient) -> bool:
    return wants_notice(msg, rcpt, Outcome.BOUNCED)


def dsn_queue_id(queue_id: str, recipients: Sequence[str], attempt: int, kind: str) -> str:
    """The same report of the same attempt always gets the same id, so one re-sent after a
    crash is deduplicated by the store like any redelivered message. The original's time part
    is kept, so ids still sort by time."""
    key = "\n".join([queue_id, kind, str(attempt), *sorted(recipients)]).encode()
    n = int.from_bytes(hashlib.sha256(key).digest()[:8], "big")
    out = []
    for _ in range(10):
        n, r = divmod(n, len(_ALPHABET))
        out.append(_ALPHABET[r])
    return queue_id[:10] + "".join(out)


def decode_orcpt(orcpt: str) -> str:
    """``rfc822;a+2Bb@x`` -> ``rfc822; a+b@x`` (RFC 3461 §4.2 xtext, shown decoded §6.3)."""
    addr_type, _, value = orcpt.partition(";")
    decoded = _XTEXT.sub(lambda m: chr(int(m.group(1), 16)), value)
    return f"{addr_type}; {decoded}"


def _verbatim(maintype: str, subtype: str, data: bytes, token: str) -> MIMEBase:
    """A part whose body is ``token``, to be replaced by ``data`` in the generated report: the
    email package would refold long header lines of a parsed message and turn 8-bit octets it
    cannot decode into U+FFFD, and what comes back must be what the sender wrote. 8bit when it
    has non-ASCII octets (RFC 2046 §5.2.1 allows 7bit, 8bit or binary for message/rfc822;
    the report then goes as 8BITMIME)."""
    part = MIMEBase(maintype, subtype)
    part.set_payload(token)
    part["Content-Transfer-Encoding"] = "7bit" if data.isascii() else "8bit"
    return part


def _headers_only(content: bytes) -> bytes:
    end = content.find(b"\r\n\r\n")
    return content if end < 0 else content[: end + 4]


def _human_text(
    reporting_mta: str, results: Sequence[RecipientResult], action: str, until: str = ""
) -> str:
    keep_trying = f"until {until}" if until else "for a while"
    intro = {
        "failed": "Your message could not be delivered to one or more recipients.\n"
        "It is attached below.",
        "delayed": "THIS IS A WARNING ONLY. YOU DO NOT NEED TO RESEND YOUR MESSAGE.\n\n"
        "Your message could not be delivered yet to the recipients below. The mail\n"
        f"system will keep trying {keep_trying}, and will tell you if it\n"
        "gives up. Its header section is attached below.",
        "delivered": "Your message was delivered to the recipients below.",
        "relayed": "Your message was relayed to the recipients below, whose mail systems\n"
        "do not send delivery reports.",
    }[action]
    lines = [f"This is the mail system at host {reporting_mta}.", "", intro, ""]
    for r in results:
        where = f" (from {r.remote_mta})" if r.remote_mta else ""
        lines.append(f"<{r.recipient}>: {r.reply_code} {r.status} {r.diagnostic}{where}")
    return "\n".join(lines) + "\n"


def build_dsn(
    msg: events_pb2.InboundMessage,
    results: Sequence[RecipientResult],
    original: bytes,
    reporting_mta: str,
    attempt: int = 1,
    recipients: Sequence[events_pb2.Recipient] | None = None,
    retry_until_ms: Mapping[str, int] | None = None,
) -> events_pb2.InboundMessage:
    """The report on ``results`` (all of one Outcome) as a new inbound message from <> to the
    original sender, with a deterministic queue id. ``recipients``: the envelope recipients
    the results are about, when not the message's own (an alias's forward targets carry
    the alias as ORCPT, RFC 3461 §6.2.7.3). ``retry_until_ms``: for a delay report, when
    attempts to each recipient will be given up (Unix ms; RFC 3464 §2.3.8 Will-Retry-Until,
    which "MUST NOT appear in other DSNs")."""
    action = _ACTION[results[0].outcome][0]
    assert all(_ACTION[r.outcome][0] == action for r in results)
    subject = {
        "failed": "Undelivered Mail Returned to Sender",
        "delayed": "Delayed Mail (still being retried)",
        "delivered": "Successful Mail Delivery Report",
        "relayed": "Successful Mail Delivery Report",
    }[action]
    now = time.time()
    queue_id = dsn_queue_id(msg.queue_id, [r.recipient for r in results], attempt, action)
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"
    report["To"] = msg.mail_from
    report["Subject"] = subject
    report["Date"] = email.utils.formatdate(now)
    report["Message-ID"] = f"<{queue_id}.dsn@{reporting_mta}>"
    report["Auto-Submitted"] = "auto-replied"  # RFC 3834 §5
    until_ms = dict(retry_until_ms or {}) if action == "delayed" else {}
    latest = max((until_ms[r.recipient] for r in results if r.recipient in until_ms), default=0)
    human = _human_text(
        reporting_mta, results, action, email.utils.formatdate(latest / 1000) if latest else ""
    )
    # 7bit when it can be (readable as is; utf-8 would make the email package use base64).
    report.attach(MIMEText(human, "plain", "us-ascii" if human.isascii() else "utf-8"))

    # RFC 3464 §2.2 per-message fields, then one §2.3 group per recipient; the email package
    # models message/delivery-status as a list of header blocks.
    per_message = Message()
    per_message["Reporting-MTA"] = f"dns; {reporting_mta}"
    if msg.envid:
        per_message["Original-Envelope-Id"] = msg.envid
    per_message["Arrival-Date"] = email.utils.formatdate(msg.received_at_ms / 1000 or now)
    blocks = [per_message]
    orcpts = {r.address: r.orcpt for r in msg.recipients}
    orcpts.update((r.address, r.orcpt) for r in recipients or ())
    for r in results:
        block = Message()
        if orcpts.get(r.recipient):
            block["Original-Recipient"] = decode_orcpt(orcpts[r.recipient])
        block["Final-Recipient"] = f"rfc822; {r.recipient}"
        block["Action"] = action
        block["Status"] = r.status
        if r.remote_mta:
            block["Remote-MTA"] = f"dns; {r.remote_mta}"
        # RFC 3464 §2.3.6: "smtp;" only for a reply an SMTP peer gave; what this system says
        # itself (local delivery, a connection that failed, an expired queue lifetime with no
        # reply) has a type of its own, as Postfix's "X-Postfix;".
        if r.remote_reply:
            block["Diagnostic-Code"] = f"smtp; {r.remote_reply}"
        else:
            block["Diagnostic-Code"] = f"X-Postmesh; {r.diagnostic_code}"
        block["Last-Attempt-Date"] = email.utils.formatdate(now)
        if r.recipient in until_ms:
            block["Will-Retry-Until"] = email.utils.formatdate(until_ms[r.recipient] / 1000)
        blocks.append(block)
    ds = MIMEBase("message", "delivery-status")
    ds.set_payload(blocks)  # type: ignore[arg-type]
    report.attach(ds)

    # RFC 3461 §4.3: RET=FULL returns the message; HDRS, the default for success reports
    # and a message too large to return, the headers (RFC 6522 §4 text/rfc822-headers).
    return_whole = (action in ("failed", "delayed") and msg.ret.upper() != "HDRS") and len(
        original
    ) <= MAX_RETURNED_BYTES
    if action == "delayed" or msg.requiretls:
        # RFC 8689 §5: a report on a REQUIRETLS message behaves as if RET=HDRS was given
        # (RET=FULL is disregarded): the body never travels in a report that may have to go
        # back without REQUIRETLS.
        return_whole = False
    if msg.body_type.upper() == "BINARYMIME":
        # ADR 40: binary content cannot travel in a report that goes by DATA (7bit/8bit MIME,
        # RFC 3030 §3) to wherever the sender is; the header section tells them which message.
        return_whole = False
    # No original: the content is gone (claim-check blob expired), nothing to return.
    returned = b""
    token = f"postmesh-returned-content-{queue_id}-{secrets.token_hex(16)}"
    if original and return_whole:
        returned = original
        report.attach(_verbatim("message", "rfc822", returned, token))
    elif original:
        returned = _headers_only(original)
        report.attach(_verbatim("text", "rfc822-headers", returned, token))

    content = report.as_bytes(policy=email.policy.SMTP)
    boundary = report.get_boundary()
    if returned and boundary and b"--" + boundary.encode() in returned:
        # The returned octets hold our boundary line: one that cannot appear in them.
        report.set_boundary(f"={secrets.token_hex(24)}=")
        content = report.as_bytes(policy=email.policy.SMTP)
    if returned:
        # The generator's line break after the token belongs to the closing delimiter (RFC
        # 2046 §5.1.1), so the returned octets keep their own last CRLF.
        content = content.replace(token.encode(), returned, 1)
    return events_pb2.InboundMessage(
        queue_id=queue_id,
        mail_from="",
        recipients=[events_pb2.Recipient(address=msg.mail_from)],
        inline_content=content,
        size=len(content),
        received_at_ms=int(now * 1000),
        client=events_pb2.ClientInfo(listener="dsn"),
        # RFC 8689 §5: the report is protected as the original was, where the way back allows.
        requiretls=msg.requiretls,
    )


def build_failure_dsn(
    msg: events_pb2.InboundMessage,
    failures: list[RecipientResult],
    original: bytes,
    reporting_mta: str,
    attempt: int = 1,
) -> events_pb2.InboundMessage:
    return build_dsn(msg, failures, original, reporting_mta, attempt)


def count_received(content: bytes) -> int:
    """Received: fields in the header section (RFC 5321 §6.3 loop detection)."""
    end = content.find(b"\r\n\r\n")
    head = content if end < 0 else content[:end]
    return sum(1 for line in head.split(b"\r\n") if line[:9].lower() == b"received:")
