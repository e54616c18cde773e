"""Delivery status notifications end to end: a recipient whose mailbox is over quota produces an
RFC 3464 bounce in the sender's INBOX (remote failures: test_delivery_relay.py, against real
DNS and SMTP peers)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import smtplib
import uuid

from postmesh.api.store.v1 import store_pb2, store_pb2_grpc
from postmesh.common.devstack import Stack
from postmesh.common.grpc import channel
from tests.integration.stack import wait_for
from tests.integration.test_mail_end_to_end import (
    create_user,
    imap_fetch_all,
    insecure_tls,
)


async def set_quota(stack: Stack, user: str, storage_bytes: int) -> None:
    # As auth would (quotas are its to set, ADR 10).
    ch = channel(stack.grpc_target("store"), stack.grpc_security("auth"), "store")
    stub = store_pb2_grpc.StoreServiceStub(ch)
    await stub.ProvisionUser(store_pb2.ProvisionUserRequest(user=user), timeout=30)
    await stub.SetQuota(
        store_pb2.SetQuotaRequest(user=user, storage_limit_bytes=storage_bytes), timeout=30
    )
    await ch.close()


def test_over_quota_and_unroutable_recipients_bounce_to_the_sender(stack: Stack) -> None:
    marker = uuid.uuid4().hex[:8]
    sender, full = f"sender-{marker}@example.test", f"full-{marker}@example.test"
    create_user(stack, sender, "sender-pw-1")
    create_user(stack, full, "full-pw-1")
    asyncio.run(set_quota(stack, full, 64))  # smaller than any message

    message = (
        f"From: <{sender}>\r\nTo: <{full}>\r\nSubject: will bounce {marker}\r\n"
        f"Message-ID: <{marker}@example.test>\r\n\r\nThis cannot be stored.\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_submission, timeout=30) as smtp:
        smtp.starttls(context=insecure_tls())
        smtp.login(sender, "sender-pw-1")
        refused = smtp.sendmail(sender, [full], message, rcpt_options=["NOTIFY=FAILURE"])
        assert refused == {}

    [bounce] = wait_for(
        lambda: imap_fetch_all(stack, sender, "sender-pw-1") or None, what="the bounce"
    )
    parsed = email.message_from_bytes(bounce, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/report"
    assert parsed["Auto-Submitted"] == "auto-replied"
    parts = list(parsed.iter_parts())
    status = parts[1].as_string()
    assert f"Final-Recipient: rfc822; {full}" in status and "Status: 5.2.2" in status
    returned = parts[2].as_bytes()
    assert f"Subject: will bounce {marker}".encode() in returned
    assert imap_fetch_all(stack, full, "full-pw-1") == []
