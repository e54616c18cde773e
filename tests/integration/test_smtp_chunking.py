"""CHUNKING (RFC 3030) through the whole system: smtplib's low-level calls send BDAT chunks
(neither smtplib nor Postfix's SMTP client has a BDAT sender of its own; Postfix supports
CHUNKING only as a server), and the message goes through the bus and the store to an IMAP
reader byte for byte, on both backends."""

from __future__ import annotations

import json
import re
import smtplib
import uuid

from postmesh.common.devstack import Stack
from tests.integration.stack import wait_for
from tests.integration.test_mail_end_to_end import create_user, imap_fetch_all

CHUNK = 16 * 1024


def test_bdat_chunks_reach_imap_byte_for_byte(stack: Stack) -> None:
    user, password = f"chunk-{uuid.uuid4().hex[:8]}@example.test", "chunk-pass-1"
    create_user(stack, user, password)
    marker = uuid.uuid4().hex
    original = (
        f"From: <someone@remote.example>\r\nTo: <{user}>\r\nSubject: chunked {marker}\r\n"
        f"Message-ID: <{marker}@remote.example>\r\n\r\n"
        # No dot-stuffing with BDAT: these lines travel as they are.
        ".a line that starts with a dot\r\n.\r\n"
        + "filler line of a message large enough for several chunks\r\n" * 1500
        + "last line\r\n"
    ).encode()
    chunks = [original[i : i + CHUNK] for i in range(0, len(original), CHUNK)]
    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_mx, timeout=30) as smtp:
        smtp.ehlo("client.remote.example")
        assert smtp.has_extn("chunking")
        assert smtp.mail("someone@remote.example")[0] == 250
        assert smtp.rcpt(user)[0] == 250
        for i, chunk in enumerate(chunks):
            last = " LAST" if i == len(chunks) - 1 else ""
            smtp.send(f"BDAT {len(chunk)}{last}\r\n".encode() + chunk)
            code, text = smtp.getreply()
            assert code == 250, (i, text)
        queue_id = text.decode().rpartition("queued as ")[2]
    [got] = wait_for(lambda: imap_fetch_all(stack, user, password) or None, 60, "the message")
    assert got.endswith(original)  # our Received and Authentication-Results fields on top
    ours = re.search(rb"\(Postmesh\) with ESMTP id (\w+)", got)
    assert ours is not None and ours.group(1).decode() == queue_id
    # The edge's own account: received by BDAT in that many chunks.
    events = [json.loads(line) for line in stack.log_tail("smtp-edge", 5000).splitlines()]
    done = [e for e in events if e.get("msg") == "bdat complete" and e.get("queue_id") == queue_id]
    assert [(e["chunks"], e["size"]) for e in done] == [(len(chunks), len(original))]
