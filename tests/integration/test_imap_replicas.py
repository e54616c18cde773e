"""Two imap-gw replicas on one store and one bus (issue 7 item 4): a message delivered through
SMTP is announced to IDLE sessions on both, and a flag change or an expunge made through one
replica reaches an IDLE session on the other, by postmesh.mailbox-events (real Kafka in the
distributed run). The announcement latency is printed, never asserted."""

from __future__ import annotations

import imaplib
import time
import uuid

from postmesh.common.devstack import Stack
from tests.integration.imap_idle import IdleClient
from tests.integration.infra.ports import free_port
from tests.integration.test_mail_end_to_end import create_user, sample_message, submit


def test_changes_through_one_replica_reach_idle_on_the_other(stack: Stack) -> None:
    user, password = f"replicas-{uuid.uuid4().hex[:8]}@example.test", "replicas-pass-1"
    create_user(stack, user, password)
    second = {"POSTMESH_IMAP_PORT": str(free_port()), "POSTMESH_IMAPS_PORT": str(free_port())}
    with stack.replica("imap-gw", "imap-gw-2", free_port(), second):
        port_a, port_b = stack.ports.imap, int(second["POSTMESH_IMAP_PORT"])
        idlers = {"replica 1": IdleClient(port_a), "replica 2": IdleClient(port_b)}
        for client in idlers.values():
            client.command(f'LOGIN "{user}" "{password}"')
            assert b"* 0 EXISTS" in client.command("SELECT INBOX")
            client.idle()

        sent = time.monotonic()
        submit(stack, user, password, sample_message(user, user, uuid.uuid4().hex))
        for where, client in idlers.items():
            client.wait_for(rb"^\* 1 EXISTS")
            print(f"new mail announced in IDLE on {where} after {time.monotonic() - sent:.3f} s")

        # Flag, then expunge, through replica 2 with another client: the IDLE session on
        # replica 1 hears both (RFC 9051 §7.5.1: EXPUNGE may be sent during IDLE).
        with imaplib.IMAP4("127.0.0.1", port_b) as other:
            other.login(user, password)
            other.select("INBOX")
            changed = time.monotonic()
            assert other.store("1", "+FLAGS", r"(\Flagged)")[0] == "OK"
            flagged = idlers["replica 1"].wait_for(rb"^\* 1 FETCH \(.*\\Flagged")
            print(f"flag change seen on replica 1 after {time.monotonic() - changed:.3f} s")
            assert b"\\Seen" not in flagged
            assert other.store("1", "+FLAGS", r"(\Deleted)")[0] == "OK"
            assert other.expunge()[0] == "OK"
            for client in idlers.values():
                client.wait_for(rb"^\* 1 EXPUNGE")
        for client in idlers.values():
            client.done()
            assert b"* 0 EXISTS" in client.command("SELECT INBOX")  # the store agrees
            client.close()
