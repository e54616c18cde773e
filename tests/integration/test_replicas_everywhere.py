"""Two of every service at once on real Kafka + FerretDB/PostgreSQL (issue 11 item 2, ADR 37).

One store: FerretDB 1.24 does not apply ``$inc`` or a conditional findAndModify atomically, on
PostgreSQL either, so two store replicas there would hand out one UID twice (ADR 37 has the
measurement); on MongoDB the store scales like the rest.

Beside the stack's own processes a second auth, smtp-edge, delivery, imap-gw and pop3-gw run
(``Stack.replica``, as more pods of the same Deployments); the second ones reach auth through
both auth replicas by gRPC round robin (an ``ipv4:a,b`` target). Then:
- mail goes through both smtp-edges to three local users while delivery #2 is stopped, so its
  share of postmesh.inbound piles up; it is let go and SIGKILLed as soon as it has delivered one
  message, in the middle of its batch. Delivery #1 takes its partitions over once the group
  expires it and delivers the uncommitted batch again: every user ends with each Message-ID
  exactly once (Deliver is idempotent per queue id, recipient and mailbox, ADR 7);
- an IDLE session on imap-gw #1 hears every message while a session on imap-gw #2 reads them;
- a POP3 session on pop3-gw #1 holds the maildrop lock: a login on pop3-gw #2 gets [IN-USE];
- both auth replicas served calls.
The second test shows the round robin itself: calls spread over two real auth replicas, and keep
succeeding when one of them is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import imaplib
import poplib
import re
import signal
import smtplib
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from postmesh.api.auth.v1 import auth_pb2, auth_pb2_grpc
from postmesh.common.devstack import Replica, Stack
from postmesh.common.grpc import channel
from tests.integration.imap_idle import IdleClient
from tests.integration.infra import KafkaBroker
from tests.integration.infra.ports import free_port
from tests.integration.stack import ops_metric, ops_samples, wait_for
from tests.integration.test_mail_end_to_end import create_user, sample_message

MESSAGES = 20
PASSWORD = "replicas-pass-1"
GROUP = "postmesh-delivery"  # the consumer group both delivery processes share
INBOUND = "postmesh.inbound"
GRPC_CALLS = "postmesh_grpc_server_handling_seconds_count"
AUTHENTICATE = "/postmesh.api.auth.v1.AuthService/Authenticate"


def second_auth(stack: Stack) -> tuple[Replica, str]:
    """Auth replica #2 (its admin API off: #1 serves it), and a gRPC target naming both."""
    grpc_port = free_port()
    env = {"POSTMESH_AUTH_LISTEN": f"127.0.0.1:{grpc_port}", "POSTMESH_ADMIN_PORT": "0"}
    both = f"ipv4:127.0.0.1:{stack.ports.auth_grpc},127.0.0.1:{grpc_port}"
    return Replica("auth", "auth-2", free_port(), env), both


def submit_through(port: int, sender: str, rcpts: list[str], markers: list[str]) -> None:
    """A submission session per message, so each AUTH is another call to auth; plaintext AUTH
    is allowed on loopback (ADR 4)."""
    for marker in markers:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.login(sender, PASSWORD)
            assert smtp.sendmail(sender, rcpts, sample_message(sender, rcpts[0], marker)) == {}


def message_ids(imap: imaplib.IMAP4) -> Counter[str]:
    """Message-ID (the marker part) -> how many messages of the selected INBOX carry it."""
    typ, data = imap.select("INBOX", readonly=True)
    assert typ == "OK"
    if int(data[0] or 0) == 0:
        return Counter()
    typ, fetched = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    assert typ == "OK"
    found = [re.search(rb"<([0-9a-f]+)@", i[1]) for i in fetched if isinstance(i, tuple)]
    return Counter(m.group(1).decode() for m in found if m)


def test_two_of_every_service_lose_and_duplicate_nothing(
    distributed_stack: Stack, kafka_broker: KafkaBroker
) -> None:
    stack = distributed_stack
    tag = uuid.uuid4().hex[:8]
    users = [f"rep{i}-{tag}@replicas.test" for i in range(3)]
    sender, idler, popper = users
    for user in users:
        create_user(stack, user, PASSWORD)
    port = {n: free_port() for n in ("mx", "sub", "subs", "qadm", "imap", "imaps", "pop", "pops")}
    auth1_before = ops_metric(stack.ports.ops["auth"], GRPC_CALLS)
    duplicates_before = ops_metric(
        stack.ports.ops["store"], "postmesh_store_deliveries_total", result="duplicate"
    )
    started = time.monotonic()
    auth2, both_auth = second_auth(stack)
    via_both = {"POSTMESH_AUTH_ADDRESS": both_auth}
    second = {
        "smtp-edge": {
            "POSTMESH_SMTP_MX_PORT": str(port["mx"]),
            "POSTMESH_SMTP_SUBMISSION_PORT": str(port["sub"]),
            "POSTMESH_SMTP_SUBMISSIONS_PORT": str(port["subs"]),
        },
        "delivery": {"POSTMESH_QUEUE_ADMIN_PORT": str(port["qadm"])},
        "imap-gw": {
            "POSTMESH_IMAP_PORT": str(port["imap"]),
            "POSTMESH_IMAPS_PORT": str(port["imaps"]),
        },
        "pop3-gw": {
            "POSTMESH_POP3_PORT": str(port["pop"]),
            "POSTMESH_POP3S_PORT": str(port["pops"]),
        },
    }
    ops2 = {svc: free_port() for svc in second}
    wanted = [auth2] + [
        Replica(svc, f"{svc}-2", ops2[svc], {**via_both, **env}) for svc, env in second.items()
    ]
    with stack.replicas(wanted) as procs:
        print(f"five second replicas ready after {time.monotonic() - started:.1f} s")

        # Delivery #2 has its share of postmesh.inbound once the group has rebalanced.
        wait_for(
            lambda: (
                ops_samples(ops2["delivery"], "postmesh_bus_consumer_lag_records", topic=INBOUND)
                or None
            ),
            timeout=30,
            what="delivery #2 to be assigned partitions of postmesh.inbound",
        )
        print(f"delivery #2 in the group after {time.monotonic() - started:.1f} s")

        idle = IdleClient(stack.ports.imap)  # imap-gw #1
        idle.command(f'LOGIN "{idler}" "{PASSWORD}"')
        assert b"* 0 EXISTS" in idle.command("SELECT INBOX")
        idle.idle()
        reader = imaplib.IMAP4("127.0.0.1", port["imap"])  # imap-gw #2
        reader.login(idler, PASSWORD)

        markers = [uuid.uuid4().hex for _ in range(MESSAGES)]
        delivery2 = procs["delivery-2"]
        delivery2.send_signal(signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(2) as pool:
                sent = [
                    pool.submit(submit_through, p, sender, users, markers[i::2])
                    for i, p in enumerate((stack.ports.smtp_submission, port["sub"]))
                ]
                for f in sent:
                    f.result()
        finally:
            delivery2.send_signal(signal.SIGCONT)
        print(f"{MESSAGES} messages submitted through both smtp-edges")

        # SIGKILL delivery #2 once it has delivered one message of its batch (polled tightly:
        # its batch commits only when the whole batch is done).
        deadline = time.monotonic() + 30
        while not (done := ops_metric(ops2["delivery"], "postmesh_delivery_recipients_total")):
            assert time.monotonic() < deadline, "delivery #2 delivered nothing in 30 s"
            time.sleep(0.02)
        delivery2.kill()
        delivery2.wait()
        killed_at = time.monotonic()
        print(f"delivery #2 SIGKILLed after {done:.0f} recipients, {killed_at - started:.1f} s in")

        # Delivery #1 has handled and committed everything once the group expired #2.
        wait_for(
            lambda: kafka_broker.uncommitted(GROUP, INBOUND) == 0 or None,
            timeout=60,
            what="delivery #1 to take over and commit postmesh.inbound",
        )
        print(f"postmesh.inbound all committed {time.monotonic() - killed_at:.1f} s after the kill")
        duplicates = (
            ops_metric(
                stack.ports.ops["store"], "postmesh_store_deliveries_total", result="duplicate"
            )
            - duplicates_before
        )
        print(f"Deliver calls that found the message already stored: {duplicates:.0f}")
        # The killed batch was delivered again (its first message at least)...
        assert duplicates >= 1
        # ...and yet each user has each message exactly once, seen through imap-gw #2.
        for user in users:
            with imaplib.IMAP4("127.0.0.1", port["imap"]) as imap:
                imap.login(user, PASSWORD)
                assert message_ids(imap) == Counter(markers), user
        # IDLE on imap-gw #1 heard every message, which the session on imap-gw #2 reads too.
        idle.wait_for(rf"^\* {MESSAGES} EXISTS".encode(), timeout=30)
        idle.done()
        idle.close()
        assert message_ids(reader) == Counter(markers)
        reader.logout()

        # The maildrop lock holds across the two pop3-gws (RFC 2449 §8.1.2 [IN-USE]).
        holder = poplib.POP3("127.0.0.1", stack.ports.pop3, timeout=30)
        holder.user(popper)
        holder.pass_(PASSWORD)
        assert holder.stat()[0] == MESSAGES
        other = poplib.POP3("127.0.0.1", port["pop"], timeout=30)
        other.user(popper)
        with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
            other.pass_(PASSWORD)
        other.quit()
        holder.quit()  # releases the lock: now #2 may open the maildrop
        other = poplib.POP3("127.0.0.1", port["pop"], timeout=30)
        other.user(popper)
        other.pass_(PASSWORD)
        assert other.stat()[0] == MESSAGES
        other.quit()

        auth2_calls = ops_metric(auth2.ops_port, GRPC_CALLS)
    auth1_calls = ops_metric(stack.ports.ops["auth"], GRPC_CALLS) - auth1_before
    print(f"auth calls served: #1 {auth1_calls:.0f}, #2 {auth2_calls:.0f}")
    assert auth1_calls > 0 and auth2_calls > 0
    print(f"whole test {time.monotonic() - started:.1f} s")


def test_grpc_round_robin_over_two_auth_replicas_survives_a_sigkill(
    distributed_stack: Stack,
) -> None:
    stack = distributed_stack
    user = f"rr-{uuid.uuid4().hex[:8]}@replicas.test"
    create_user(stack, user, PASSWORD)
    req = auth_pb2.AuthenticateRequest(username=user, password=PASSWORD)
    security = stack.grpc_security("imap-gw")  # a caller auth's policy lets authenticate

    def calls(ops_port: int) -> float:
        return ops_metric(ops_port, GRPC_CALLS, method=AUTHENTICATE, code="OK")

    async def authenticate(target: str, n: int) -> None:
        ch = channel(target, security, "auth")
        stub = auth_pb2_grpc.AuthServiceStub(ch)
        try:
            for _ in range(n):
                assert (await stub.Authenticate(req, timeout=10)).ok
        finally:
            await ch.close()

    auth2, both = second_auth(stack)
    with stack.replicas([auth2]) as procs:
        proc, auth1_ops, auth2_ops = procs["auth-2"], stack.ports.ops["auth"], auth2.ops_port
        before = calls(auth1_ops), calls(auth2_ops)
        asyncio.run(authenticate(both, 40))
        served = calls(auth1_ops) - before[0], calls(auth2_ops) - before[1]
        print(f"40 calls over both replicas: #1 served {served[0]:.0f}, #2 {served[1]:.0f}")
        assert sum(served) == 40 and min(served) >= 10

        async def through_a_kill() -> None:
            ch = channel(both, security, "auth")
            stub = auth_pb2_grpc.AuthServiceStub(ch)
            try:
                for i in range(40):
                    if i == 10:  # both connections are up: replica #2 dies under the client
                        proc.kill()
                    assert (await stub.Authenticate(req, timeout=10)).ok
            finally:
                await ch.close()

        before1 = calls(auth1_ops)
        asyncio.run(through_a_kill())
        proc.wait()
        print(f"after SIGKILL of #2: #1 served {calls(auth1_ops) - before1:.0f} of the last 40")
        assert calls(auth1_ops) - before1 >= 30
