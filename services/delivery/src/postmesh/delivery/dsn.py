"""Delivery status notifications (bounces): RFC 3464 multipart/report, RFC 3461 NOTIFY/RET."""

from __future__ import annotations

import email.policy
import email.utils
import time
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

from postmesh.api.events.v1 import events_pb2
from postmesh.common.ids import new_queue_id
from postmesh.delivery.model import RecipientResult

# Headers of the original are returned for RET=HDRS and, as Postfix does, when the message is
# too large to return whole.
MAX_RETURNED_BYTES = 512 * 1024


def wants_failure_notice(msg: events_pb2.InboundMessage, rcpt: events_pb2.Recipient) -> bool:
    """No bounce of a bounce (RFC 5321 §4.5.5: null reverse path) and none when NOTIFY
    excludes FAILURE (RFC 3461 §4.1)."""
    if not msg.mail_from:
        return False
    notify = {n.upper() for n in rcpt.notify}
    return not notify or "FAILURE" in notify


def _headers_only(content: bytes) -> bytes:
    end = content.find(b"\r\n\r\n")
    return content if end < 0 else content[: end + 4]


def build_failure_dsn(
    msg: events_pb2.InboundMessage,
    failures: list[RecipientResult],
    original: bytes,
    reporting_mta: str,
) -> events_pb2.InboundMessage:
    """The bounce for ``failures`` as a new inbound message from <> to the original sender."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"
    report["To"] = msg.mail_from
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Date"] = email.utils.formatdate(localtime=False)
    report["Message-ID"] = email.utils.make_msgid(domain=reporting_mta)
    report["Auto-Submitted"] = "auto-replied"  # RFC 3834 §5
    lines = [
        f"This is the mail system at host {reporting_mta}.",
        "",
        "Your message could not be delivered to one or more recipients.",
        "",
    ]
    lines += [f"<{f.recipient}>: {f.reply_code} {f.status} {f.diagnostic}" for f in failures]
    report.attach(MIMEText("\n".join(lines) + "\n", "plain", "utf-8"))

    # RFC 3464 §2.2 per-message fields, then one §2.3 group per recipient; the email package
    # models message/delivery-status as a list of header blocks.
    per_message = Message()
    per_message["Reporting-MTA"] = f"dns; {reporting_mta}"
    if msg.envid:
        per_message["Original-Envelope-Id"] = msg.envid
    per_message["Arrival-Date"] = email.utils.formatdate(msg.received_at_ms / 1000 or time.time())
    blocks = [per_message]
    orcpts = {r.address: r.orcpt for r in msg.recipients}
    for f in failures:
        block = Message()
        if orcpts.get(f.recipient):
            block["Original-Recipient"] = orcpts[f.recipient]
        block["Final-Recipient"] = f"rfc822; {f.recipient}"
        block["Action"] = "failed"
        block["Status"] = f.status
        block["Diagnostic-Code"] = f"smtp; {f.reply_code} {f.status} {f.diagnostic}"
        blocks.append(block)
    ds = MIMEBase("message", "delivery-status")
    ds.set_payload(blocks)  # type: ignore[arg-type]
    report.attach(ds)

    return_whole = msg.ret.upper() != "HDRS" and len(original) <= MAX_RETURNED_BYTES
    if not original:
        pass  # the content is gone (claim-check blob expired): nothing to return
    elif return_whole:
        report.attach(MIMEMessage(email.message_from_bytes(original, policy=email.policy.SMTP)))
    else:  # RFC 6522 §4: text/rfc822-headers
        report.attach(
            MIMEText(_headers_only(original).decode("utf-8", "replace"), "rfc822-headers")
        )

    content = report.as_bytes(policy=email.policy.SMTP)
    return events_pb2.InboundMessage(
        queue_id=new_queue_id(),
        mail_from="",
        recipients=[events_pb2.Recipient(address=msg.mail_from)],
        inline_content=content,
        size=len(content),
        received_at_ms=int(time.time() * 1000),
        client=events_pb2.ClientInfo(listener="dsn"),
    )
