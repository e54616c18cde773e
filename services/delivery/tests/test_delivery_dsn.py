from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

from postmesh.api.events.v1 import events_pb2
from postmesh.delivery.dsn import build_dsn, count_received, dsn_queue_id, wants_notice
from postmesh.delivery.model import Outcome, RecipientResult

ORIGINAL = b"From: a@example.test\r\nTo: x@remote.test\r\nSubject: hi\r\n\r\nbody\r\n"


def msg(**kw: object) -> events_pb2.InboundMessage:
    m = events_pb2.InboundMessage(
        queue_id="0123456789ABCDEFGHJK", mail_from="a@example.test",
        recipients=[events_pb2.Recipient(address="x@remote.test", orcpt="rfc822;X+2Bz@remote.test")],
        inline_content=ORIGINAL, received_at_ms=1_700_000_000_000,
    )  # fmt: skip
    for k, v in kw.items():
        setattr(m, k, v)
    return m


FAIL = RecipientResult(
    "x@remote.test", Outcome.BOUNCED, "550", "5.1.1", "no such user", "mx.remote.test",
    "550 5.1.1 no such user",
)  # fmt: skip


def parts(report: events_pb2.InboundMessage) -> list[EmailMessage]:
    parsed = email.message_from_bytes(report.inline_content, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "delivery-status"
    return list(parsed.iter_parts())  # type: ignore[arg-type]


def test_failure_report_fields() -> None:
    report = build_dsn(msg(envid="ENV-7"), [FAIL], ORIGINAL, "out.example.test", attempt=3)
    assert report.mail_from == "" and [r.address for r in report.recipients] == ["a@example.test"]
    human, status, returned = parts(report)
    assert "<x@remote.test>: 550 5.1.1 no such user (from mx.remote.test)" in human.get_content()
    text = status.as_string()
    for line in (
        "Reporting-MTA: dns; out.example.test",
        "Original-Envelope-Id: ENV-7",
        "Original-Recipient: rfc822; X+z@remote.test",
        "Final-Recipient: rfc822; x@remote.test",
        "Action: failed",
        "Status: 5.1.1",
        "Remote-MTA: dns; mx.remote.test",
        "Diagnostic-Code: smtp; 550 5.1.1 no such user",
    ):
        assert line in text
    assert returned.get_content_type() == "message/rfc822"
    assert b"Subject: hi" in returned.as_bytes()
    assert report.inline_content.count(b"Auto-Submitted: auto-replied") == 1


def test_a_diagnostic_made_here_is_not_called_an_smtp_reply() -> None:
    """RFC 3464 §2.3.6: "smtp;" is for what an SMTP peer replied; a connection that failed
    until the queue lifetime ran out, or a local delivery, is described in a type of ours."""
    expired = RecipientResult(
        "x@remote.test", Outcome.BOUNCED, "451", "4.4.1",
        "delivery time expired; last error: connection refused",
    )  # fmt: skip
    _human, status, _returned = parts(build_dsn(msg(), [expired], ORIGINAL, "out.example.test"))
    text = " ".join(status.as_string().split())  # unfolded, wherever the fold falls
    assert "Diagnostic-Code: X-Postmesh; 451 4.4.1 delivery time expired" in text, text
    assert "smtp;" not in text and "Remote-MTA" not in text


def test_ret_hdrs_returns_headers_only() -> None:
    report = build_dsn(msg(ret="HDRS"), [FAIL], ORIGINAL, "out.example.test")
    *_, returned = parts(report)
    assert returned.get_content_type() == "text/rfc822-headers"
    assert "Subject: hi" in returned.get_content() and "body" not in returned.get_content()


def test_the_returned_content_is_the_original_octets() -> None:
    """A long header line is not refolded, an undecodable 8-bit octet is not replaced: what
    comes back is what was sent, whole (RET=FULL) or its header section (RET=HDRS)."""
    original = (
        b"From: a@example.test\r\nX-Long: " + b"word " * 40 + b"end\r\n"
        b"Subject: caf\xe9\r\n\r\nbody \xff line\r\n"
    )
    for ret, returned in (("FULL", original), ("HDRS", original.split(b"\r\n\r\n")[0])):
        report = build_dsn(msg(ret=ret), [FAIL], original, "out.example.test")
        assert returned + b"\r\n" in report.inline_content, ret
        *_, part = parts(report)
        assert part["Content-Transfer-Encoding"] == "8bit"
    *_, part = parts(build_dsn(msg(), [FAIL], ORIGINAL, "out.example.test"))
    assert part.get_content_type() == "message/rfc822"
    assert part["Content-Transfer-Encoding"] == "7bit" and ORIGINAL in report_bytes(part)


def report_bytes(part: EmailMessage) -> bytes:
    return part.as_bytes(policy=email.policy.SMTP)


def test_bounce_ids_are_deterministic() -> None:
    a = build_dsn(msg(), [FAIL], ORIGINAL, "h", attempt=2)
    b = build_dsn(msg(), [FAIL], ORIGINAL, "h", attempt=2)
    assert a.queue_id == b.queue_id and a.queue_id.startswith("0123456789")
    assert dsn_queue_id("Q", ["b", "a"], 1, "failed") == dsn_queue_id("Q", ["a", "b"], 1, "failed")
    assert dsn_queue_id("Q", ["a"], 1, "failed") != dsn_queue_id("Q", ["a"], 2, "failed")


def test_notify_rules() -> None:
    m = msg()
    rcpt = m.recipients[0]
    assert wants_notice(m, rcpt, Outcome.BOUNCED)
    assert not wants_notice(m, rcpt, Outcome.DELIVERED)
    assert not wants_notice(msg(mail_from=""), rcpt, Outcome.BOUNCED)  # never to <>
    never = events_pb2.Recipient(address="x@remote.test", notify=["NEVER"])
    assert not wants_notice(m, never, Outcome.BOUNCED)
    success = events_pb2.Recipient(address="x@remote.test", notify=["SUCCESS"])
    assert wants_notice(m, success, Outcome.DELIVERED)
    assert not wants_notice(m, success, Outcome.BOUNCED)


def test_delay_notices_by_notify() -> None:
    """RFC 3461 §4.1: no NOTIFY "may be interpreted as either NOTIFY=FAILURE or
    NOTIFY=FAILURE,DELAY"; as Postfix, the latter. DELAY must be named otherwise."""
    m = msg()

    def delay(*notify: str) -> bool:
        rcpt = events_pb2.Recipient(address="x@remote.test", notify=list(notify))
        return wants_notice(m, rcpt, Outcome.DEFERRED)

    assert delay() and delay("DELAY") and delay("failure", "delay")
    assert not delay("FAILURE") and not delay("SUCCESS") and not delay("NEVER")
    assert not wants_notice(msg(mail_from=""), m.recipients[0], Outcome.DEFERRED)


def test_will_retry_until_only_in_a_delay_report() -> None:
    """RFC 3464 §2.3.8: Will-Retry-Until is for "delayed" DSNs and MUST NOT appear in
    others; the human-readable part says until when too."""
    deferred = RecipientResult(
        "x@remote.test", Outcome.DEFERRED, "421", "4.7.0", "too busy", "mx.remote.test",
        "421 4.7.0 too busy",
    )  # fmt: skip
    until = {"x@remote.test": 1_700_432_000_000}
    report = build_dsn(msg(), [deferred], ORIGINAL, "out.example.test", retry_until_ms=until)
    human, status, returned = parts(report)
    assert parsed_subject(report) == "Delayed Mail (still being retried)"
    text = status.as_string()
    for line in (
        "Action: delayed",
        "Status: 4.7.0",
        "Remote-MTA: dns; mx.remote.test",
        "Diagnostic-Code: smtp; 421 4.7.0 too busy",
        "Will-Retry-Until: Sun, 19 Nov 2023 22:13:20 -0000",
    ):
        assert line in text, text
    assert "until Sun, 19 Nov 2023 22:13:20 -0000" in " ".join(human.get_content().split())
    assert returned.get_content_type() == "text/rfc822-headers"
    failed = build_dsn(msg(), [FAIL], ORIGINAL, "out.example.test", retry_until_ms=until)
    assert b"Will-Retry-Until" not in failed.inline_content


def parsed_subject(report: events_pb2.InboundMessage) -> str:
    return str(email.message_from_bytes(report.inline_content)["Subject"])


def test_received_headers_are_counted_in_the_header_section_only() -> None:
    head = b"Received: from a\r\n\tby b\r\nreceived: x\r\nSubject: s\r\n\r\n"
    assert count_received(head + b"Received: in the body\r\n") == 2


def test_binarymime_original_is_returned_as_headers_only() -> None:
    """ADR 40: a report travels as 7bit/8bit mail, so binary content stays behind."""
    binary = ORIGINAL.replace(b"body\r\n", b"\x00bin\rary\n")
    report = build_dsn(msg(body_type="BINARYMIME"), [FAIL], binary, "out.example.test")
    returned = parts(report)[-1]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert b"\x00" not in report.inline_content and b"ary\n" not in report.inline_content
