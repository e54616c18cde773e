"""Accounts an administrator runs a company on, over the wire: aliases, plus-addressing and a
catch-all through the MX to IMAP; disabling, re-enabling, password changes and deletion seen by
IMAP, POP3 and SMTP; the admin API's input checks and quotas (through the real store)."""

from __future__ import annotations

import imaplib
import json
import poplib
import smtplib
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest

from postmesh.common.devstack import Stack
from postmesh.smtp_edge.settings import SmtpEdgeSettings
from tests.integration.stack import wait_for
from tests.integration.test_mail_end_to_end import (
    create_user,
    imap_fetch_all,
    insecure_tls,
    sample_message,
)

SENDER = "someone@example.net"
PASSWORD = "pw-accounts-1"


def admin(stack: Stack, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """(status, decoded JSON body or None) of one admin API request."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{stack.ports.admin}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {stack.admin_token()}",
        },
        method=method,
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return int(resp.status), json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw else None


def new_domain(stack: Stack, *users: str) -> str:
    """A domain of its own per test (stacks are shared), with ``users`` created in it."""
    domain = f"acct-{uuid.uuid4().hex[:10]}.test"
    assert admin(stack, "POST", "/api/v1/domains", {"name": domain})[0] == 201
    for user in users:
        create_user(stack, f"{user}@{domain}", PASSWORD)
    return domain


def mx_send(stack: Stack, rcpts: list[str], marker: str) -> None:
    message = sample_message(SENDER, rcpts[0], marker)
    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_mx, timeout=30) as smtp:
        assert smtp.sendmail(SENDER, rcpts, message) == {}


def with_marker(stack: Stack, user: str, marker: str) -> list[bytes]:
    return [m for m in imap_fetch_all(stack, user, PASSWORD) if marker.encode() in m]


def arrived(stack: Stack, user: str, marker: str) -> list[bytes]:
    return wait_for(
        lambda: with_marker(stack, user, marker) or None, what=f"{marker} in {user}'s INBOX"
    )


def rcpt_reply(stack: Stack, rcpt: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_mx, timeout=30) as smtp:
        smtp.ehlo("peer.example.net")
        assert smtp.mail(SENDER)[0] == 250
        return smtp.rcpt(rcpt)


# The MX keeps an answer "a local user" this long (ADR 43); other answers are never kept.
RECIPIENT_CACHE_SECONDS = SmtpEdgeSettings.model_fields["smtp_recipient_cache_seconds"].default


def refused_once_forgotten(stack: Stack, rcpt: str, enhanced: bytes) -> None:
    """An address that took mail just before it was removed: accepted at most for the
    recipient cache's time (delivery then looks again and bounces), refused after it."""
    deadline = time.monotonic() + RECIPIENT_CACHE_SECONDS + 5.0
    while True:
        code, text = rcpt_reply(stack, rcpt)
        if code == 550:
            assert enhanced in text
            return
        assert code == 250 and time.monotonic() < deadline, (code, text)
        time.sleep(0.25)


def test_alias_reaches_each_target_once_and_plus_address_reaches_the_user(stack: Stack) -> None:
    d = new_domain(stack, "alice", "bob")
    # team -> alice, staff; staff -> alice, bob: alice is named twice, gets one copy.
    status, body = admin(
        stack, "POST", "/api/v1/aliases", {"address": f"staff@{d}", "targets": [f"alice@{d}"]}
    )
    assert status == 201, body
    status, body = admin(
        stack, "PUT", f"/api/v1/aliases/staff@{d}", {"targets": [f"alice@{d}", f"bob@{d}"]}
    )
    assert status == 200 and body["targets"] == [f"alice@{d}", f"bob@{d}"]
    team = {"address": f"Team@{d}", "targets": [f"alice@{d}", f"staff@{d}"]}
    assert admin(stack, "POST", "/api/v1/aliases", team)[0] == 201

    to_alias = uuid.uuid4().hex
    mx_send(stack, [f"team@{d}"], to_alias)
    for user in ("alice", "bob"):
        assert len(arrived(stack, f"{user}@{d}", to_alias)) == 1, user

    tagged = uuid.uuid4().hex
    mx_send(stack, [f"bob+Invoices@{d}"], tagged)
    assert len(arrived(stack, f"bob@{d}", tagged)) == 1
    assert with_marker(stack, f"alice@{d}", tagged) == []
    # Both copies of the alias's message are still single after later mail went through.
    for user in ("alice", "bob"):
        assert len(with_marker(stack, f"{user}@{d}", to_alias)) == 1, user

    assert admin(stack, "DELETE", f"/api/v1/aliases/team@{d}")[0] == 204
    refused_once_forgotten(stack, f"team@{d}", b"5.1.1")


def test_catch_all_takes_unknown_local_parts_of_its_domain_only(stack: Stack) -> None:
    d = new_domain(stack, "carol", "dave")
    other = new_domain(stack)
    status, body = admin(stack, "PUT", f"/api/v1/domains/{d}/catch-all", {"target": f"carol@{d}"})
    assert status == 200 and body == {"domain": d, "target": f"carol@{d}"}

    caught = uuid.uuid4().hex
    mx_send(stack, [f"no-such-{caught[:6]}@{d}"], caught)
    assert len(arrived(stack, f"carol@{d}", caught)) == 1
    # A real user keeps their mail; the other domain still refuses unknown users.
    direct = uuid.uuid4().hex
    mx_send(stack, [f"dave@{d}"], direct)
    assert len(arrived(stack, f"dave@{d}", direct)) == 1
    assert with_marker(stack, f"carol@{d}", direct) == []
    code, text = rcpt_reply(stack, f"whoever@{other}")
    assert code == 550 and b"5.1.1" in text
    # The catch-all's owner may not send as an address it merely catches.
    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_submission, timeout=30) as smtp:
        smtp.starttls(context=insecure_tls())
        smtp.login(f"carol@{d}", PASSWORD)
        code, _ = smtp.mail(f"ceo@{d}")
        assert code == 553

    assert admin(stack, "DELETE", f"/api/v1/domains/{d}/catch-all")[0] == 204
    refused_once_forgotten(stack, f"no-such-{caught[:6]}@{d}", b"5.1.1")


def test_mx_accepts_an_alias_forwarding_to_a_remote_address_but_still_no_relay(
    stack: Stack,
) -> None:
    d = new_domain(stack)
    alias = {"address": f"fwd@{d}", "targets": ["Someone@elsewhere.example"]}
    assert admin(stack, "POST", "/api/v1/aliases", alias)[0] == 201
    assert rcpt_reply(stack, f"fwd@{d}")[0] == 250
    code, text = rcpt_reply(stack, "someone@elsewhere.example")
    assert code == 554 and b"5.7.1" in text


def logins(stack: Stack, user: str, password: str) -> dict[str, bool]:
    """Whether ``user`` gets in with ``password`` over IMAP, POP3 and SMTP AUTH."""
    ok: dict[str, bool] = {}
    with imaplib.IMAP4("127.0.0.1", stack.ports.imap) as imap:
        try:
            imap.login(user, password)
            ok["imap"] = True
        except imaplib.IMAP4.error:
            ok["imap"] = False
    pop = poplib.POP3("127.0.0.1", stack.ports.pop3, timeout=30)
    try:
        pop.user(user)
        pop.pass_(password)
        ok["pop3"] = True
    except poplib.error_proto:
        ok["pop3"] = False
    finally:
        pop.quit()
    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_submission, timeout=30) as smtp:
        smtp.starttls(context=insecure_tls())
        try:
            smtp.login(user, password)
            ok["smtp"] = True
        except smtplib.SMTPAuthenticationError:
            ok["smtp"] = False
    return ok


ALL = {"imap": True, "pop3": True, "smtp": True}
NONE = {"imap": False, "pop3": False, "smtp": False}


def test_disabled_user_cannot_log_in_or_receive_until_enabled(stack: Stack) -> None:
    d = new_domain(stack, "erin")
    user = f"erin@{d}"
    assert logins(stack, user, PASSWORD) == ALL
    status, body = admin(stack, "POST", f"/api/v1/users/{user}/disable")
    assert status == 200 and body == {"address": user, "disabled": True}
    assert logins(stack, user, PASSWORD) == NONE
    code, text = rcpt_reply(stack, user)
    assert code == 550 and b"5.2.1" in text

    status, body = admin(stack, "POST", f"/api/v1/users/{user}/enable")
    assert status == 200 and body["disabled"] is False
    assert logins(stack, user, PASSWORD) == ALL
    assert rcpt_reply(stack, user)[0] == 250


def test_password_change_takes_effect_everywhere(stack: Stack) -> None:
    d = new_domain(stack, "frank")
    user = f"frank@{d}"
    assert logins(stack, user, PASSWORD) == ALL  # also fills auth's login cache
    status, _ = admin(stack, "PUT", f"/api/v1/users/{user}/password", {"password": "n3w-secret"})
    assert status == 204
    assert logins(stack, user, PASSWORD) == NONE
    assert logins(stack, user, "n3w-secret") == ALL


def test_deleted_user_cannot_log_in_and_gets_no_mail(stack: Stack) -> None:
    d = new_domain(stack, "gina")
    user = f"gina@{d}"
    assert admin(stack, "DELETE", f"/api/v1/users/{user}")[0] == 204
    assert logins(stack, user, PASSWORD) == NONE
    code, text = rcpt_reply(stack, user)
    assert code == 550 and b"5.1.1" in text
    assert admin(stack, "GET", f"/api/v1/users/{user}")[0] == 404


def test_quota_is_set_in_the_store(stack: Stack) -> None:
    d = new_domain(stack, "hal")
    user = f"hal@{d}"
    status, body = admin(
        stack,
        "PUT",
        f"/api/v1/users/{user}/quota",
        {"storage_limit_bytes": 2_000_000, "message_limit": 100},
    )
    assert status == 200, body
    assert body["storage_limit_bytes"] == 2_000_000 and body["message_limit"] == 100
    status, body = admin(stack, "GET", f"/api/v1/users/{user}/quota")
    assert status == 200 and body["storage_limit_bytes"] == 2_000_000
    # IMAP QUOTA (RFC 9208) reads the same limit: STORAGE in units of 1024 octets.
    with imaplib.IMAP4("127.0.0.1", stack.ports.imap) as imap:
        imap.login(user, PASSWORD)
        typ, data = imap.getquotaroot("INBOX")
        assert typ == "OK"
        lines = b" ".join(x for part in data for x in part if isinstance(x, bytes))
        assert b"STORAGE 0 1953" in lines and b"MESSAGE 0 100" in lines, lines


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"address": "no-at-sign", "targets": ["a@x.test"]}, "expected local-part@domain"),
        ({"address": "a b@example.test", "targets": ["a@x.test"]}, "dot-atom"),
        ({"address": "a@bad_domain.test", "targets": ["a@x.test"]}, "invalid domain name"),
        ({"address": "ok@example.test", "targets": ["a\r\nb@x.test"]}, "dot-atom"),
        ({"address": {"$ne": ""}, "targets": ["a@x.test"]}, "string"),
        # A lone surrogate is legal JSON: still a 422 with a reason, never a 500.
        ({"address": "\ud800@example.test", "targets": ["a@x.test"]}, "valid string"),
        ({"address": "ok@example.test", "targets": [{"$gt": ""}]}, "string"),
    ],
)
def test_bad_address_to_admin_api_is_422_with_a_reason(
    stack: Stack, body: dict[str, Any], reason: str
) -> None:
    status, answer = admin(stack, "POST", "/api/v1/aliases", body)
    assert status == 422, answer
    assert reason in json.dumps(answer["detail"]), answer
