"""Whole sessions over real sockets with Python's imaplib against fakes behind the interfaces."""

from __future__ import annotations

import asyncio
import base64
import imaplib
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from prometheus_client import REGISTRY

from postmesh.imap_gw.backend import FlagsMode

if TYPE_CHECKING:
    from store_env import StoreEnv as Env

USER = "alice@example.org"
PASSWORD = 's3cret pass\\"word'

T = TypeVar("T")


async def in_thread(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


def no_verify() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(env: Env) -> imaplib.IMAP4:
    return imaplib.IMAP4("127.0.0.1", env.port, timeout=10)


def logged_in(env: Env) -> imaplib.IMAP4:
    m = connect(env)
    m.login(USER, PASSWORD)
    return m


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_greeting_capabilities_and_login(env: Env) -> None:
    def run() -> tuple[Any, ...]:
        m = connect(env)
        caps = m.capabilities
        welcome = m.welcome
        typ, data = m.login(USER, PASSWORD)
        state = m.state
        m.logout()
        return caps, welcome, typ, data, state

    caps, welcome, typ, data, state = await in_thread(run)
    assert welcome.startswith(b"* OK [CAPABILITY IMAP4rev1 IMAP4rev2 ") and welcome.endswith(
        b"] Postmesh ready"
    )
    assert {"IMAP4REV1", "IMAP4REV2", "STARTTLS", "AUTH=PLAIN", "SASL-IR", "LITERAL+"} <= set(caps)
    assert "LOGINDISABLED" not in caps  # loopback counts as secure
    assert typ == "OK" and state == "AUTH"
    assert b"[CAPABILITY IMAP4rev1" in data[0] and b"STARTTLS" not in data[0]
    assert env.auth.calls == [(USER, "127.0.0.1", "")]


async def test_wrong_password_is_refused(env: Env) -> None:
    def run() -> str:
        m = connect(env)
        try:
            with pytest.raises(imaplib.IMAP4.error) as exc:
                m.login(USER, "wrong")
            # The session is still usable after a failure.
            assert m.noop()[0] == "OK"
            return str(exc.value)
        finally:
            m.logout()

    assert "[AUTHENTICATIONFAILED] Authentication failed" in await in_thread(run)


async def test_authenticate_plain_with_continuation(env: Env) -> None:
    def run() -> tuple[str, str]:
        m = connect(env)
        typ, _ = m.authenticate("PLAIN", lambda _: f"\0{USER}\0{PASSWORD}".encode())
        state = m.state
        m.logout()
        return typ, state

    assert await in_thread(run) == ("OK", "AUTH")
    assert env.auth.calls == [(USER, "127.0.0.1", "PLAIN")]


async def test_login_with_synchronizing_literal(env: Env) -> None:
    def run() -> tuple[str, str]:
        m = connect(env)
        m.literal = PASSWORD.encode()  # imaplib sends {n}, waits for "+", then the bytes
        typ, _ = m._simple_command("LOGIN", USER)
        m.state = "AUTH"
        sel = m.select("INBOX")[0]
        m.logout()
        return typ, sel

    assert await in_thread(run) == ("OK", "OK")


async def test_starttls_then_login(env: Env) -> None:
    def run() -> tuple[Any, ...]:
        m = connect(env)
        before = m.capabilities
        m.starttls(ssl_context=no_verify())
        after = m.capabilities
        is_tls = isinstance(m.sock, ssl.SSLSocket)
        typ, _ = m.login(USER, PASSWORD)
        with pytest.raises(imaplib.IMAP4.error):  # not a second time
            m._simple_command("STARTTLS")
        m.logout()
        return before, after, is_tls, typ

    before, after, is_tls, typ = await in_thread(run)
    assert "STARTTLS" in before and "STARTTLS" not in after and "AUTH=PLAIN" in after
    assert is_tls and typ == "OK"


async def test_implicit_tls(env: Env) -> None:
    def run() -> tuple[Any, ...]:
        m = imaplib.IMAP4_SSL("127.0.0.1", env.tls_port, ssl_context=no_verify(), timeout=10)
        caps = m.capabilities
        m.login(USER, PASSWORD)
        n = m.select("INBOX")[1][0]
        m.logout()
        return caps, n

    caps, n = await in_thread(run)
    assert "STARTTLS" not in caps and "AUTH=PLAIN" in caps
    assert n == b"3"


async def test_plaintext_auth_needs_tls_off_loopback(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Make the loopback client look remote: only TLS allows passwords then.
    import postmesh.imap_gw.session as session_mod

    monkeypatch.setattr(session_mod, "plaintext_auth_allowed", lambda host, tls: tls)

    def run() -> tuple[Any, ...]:
        m = connect(env)
        caps = m.capabilities
        with pytest.raises(imaplib.IMAP4.error) as exc:
            m.login(USER, PASSWORD)
        m.starttls(ssl_context=no_verify())
        after = m.capabilities
        typ = m.login(USER, PASSWORD)[0]
        m.logout()
        return caps, str(exc.value), after, typ

    caps, err, after, typ = await in_thread(run)
    assert "LOGINDISABLED" in caps and "AUTH=PLAIN" not in caps
    assert "[PRIVACYREQUIRED]" in err
    assert "LOGINDISABLED" not in after and typ == "OK"
    assert env.auth.calls == [(USER, "127.0.0.1", "")]  # the cleartext try never reached auth


async def test_select_and_examine_report_the_mailbox(env: Env) -> None:
    def run() -> dict[str, Any]:
        m = logged_in(env)
        out: dict[str, Any] = {"select": m.select("INBOX")}
        for key in ("FLAGS", "RECENT", "UNSEEN", "UIDVALIDITY", "UIDNEXT", "PERMANENTFLAGS"):
            out[key] = m.response(key)[1]
        out["examine"] = m.select("inbox", readonly=True)
        out["ro_perm"] = m.response("PERMANENTFLAGS")[1]
        out["missing"] = m.select("Nope")
        out["state"] = m.state
        m.logout()
        return out

    out = await in_thread(run)
    assert out["select"] == ("OK", [b"3"])
    assert out["FLAGS"] == [b"(\\Answered \\Flagged \\Deleted \\Seen \\Draft)"]
    assert out["RECENT"] == [b"0"]
    assert out["UNSEEN"] == [b"2"]
    assert out["UIDVALIDITY"] == [b"%d" % await env.uidvalidity()]
    assert out["UIDNEXT"] == [b"4"]
    assert out["PERMANENTFLAGS"] == [b"(\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)"]
    assert out["examine"] == ("OK", [b"3"])
    assert out["ro_perm"] == [b"()"]
    assert out["missing"][0] == "NO" and b"[NONEXISTENT]" in out["missing"][1][0]
    # The paged listing followed "more" (page size 2 for 3 messages).
    assert (USER, "INBOX", 2, 2) in env.mail.made("list_flags")


async def test_fetch_peek_returns_exact_bytes_and_leaves_flags(env: Env) -> None:
    def run() -> Any:
        m = logged_in(env)
        m.select("INBOX")
        res = m.fetch("1:3", "(FLAGS RFC822.SIZE BODY.PEEK[])")
        m.logout()
        return res

    typ, data = await in_thread(run)
    assert typ == "OK"
    literals = [d for d in data if isinstance(d, tuple)]
    assert len(literals) == 3
    for i, (head, body) in enumerate(literals, start=1):
        content = await env.content(i)
        assert body == content
        assert head.startswith(f"{i} (FLAGS (".encode())
        assert f"RFC822.SIZE {len(content)} BODY[] {{{len(content)}}}".encode() in head
    assert b"FLAGS (\\Seen)" in literals[0][0] and b"FLAGS ()" in literals[1][0]
    assert "\\Seen" not in await env.flags(2)
    assert not env.mail.made("store_flags")


async def test_body_without_peek_sets_seen(env: Env) -> None:
    def run() -> tuple[Any, Any]:
        m = logged_in(env)
        m.select("INBOX")
        first = m.fetch("2", "(BODY[])")
        again = m.fetch("2", "(BODY[])")
        m.logout()
        return first, again

    first, again = await in_thread(run)
    head, body = first[1][0]
    assert head == b"2 (BODY[] {%d}" % len(body)
    assert body == await env.content(2)
    assert first[1][1] == b" FLAGS (\\Seen))"  # the implicit flag change is reported
    assert await env.flags(2) == ("\\Seen",)
    assert again[1][1] == b")"  # already \Seen: no change, no FLAGS
    assert [(a[2], a[3], a[4]) for a in env.mail.made("store_flags")] == [
        ([2], FlagsMode.ADD, ["\\Seen"])
    ]


async def test_rfc822_and_sections_in_read_only_mailbox(env: Env) -> None:
    def run() -> Any:
        m = logged_in(env)
        m.select("INBOX", readonly=True)
        res = m.fetch("2", "(RFC822 BODY[TEXT] BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY[]<0.4>)")
        m.logout()
        return res

    typ, data = await in_thread(run)
    content = await env.content(2)
    assert typ == "OK"
    assert data[0] == (b"2 (RFC822 {%d}" % len(content), content)
    assert data[1] == (b" BODY[TEXT] {22}", b"Line one.\r\nLine two.\r\n")
    assert data[2] == (b" BODY[HEADER.FIELDS (SUBJECT)] {19}", b"Subject: second\r\n\r\n")
    assert data[3] == (b" BODY[]<0> {4}", b"From")
    assert "\\Seen" not in await env.flags(2)  # EXAMINE: nothing changes


async def test_uid_fetch(env: Env) -> None:
    def run() -> tuple[Any, ...]:
        m = logged_in(env)
        m.select("INBOX")
        some = m.uid("FETCH", "2:*", "(FLAGS INTERNALDATE)")
        none = m.uid("FETCH", "99", "(FLAGS)")
        star = m.uid("FETCH", "50:*", "FLAGS")
        m.logout()
        return some, none, star

    some, none, star = await in_thread(run)
    assert some == (
        "OK",
        [
            b'2 (UID 2 FLAGS () INTERNALDATE "14-Nov-2023 22:13:20 +0000")',
            b'3 (UID 3 FLAGS (\\Flagged) INTERNALDATE "14-Nov-2023 22:13:20 +0000")',
        ],
    )
    assert none == ("OK", [None])  # RFC 9051 §6.4.9: no such UID, no output
    assert star == ("OK", [b"3 (UID 3 FLAGS (\\Flagged))"])


async def test_fetch_errors(env: Env) -> None:
    def run() -> list[str]:
        m = logged_in(env)
        errors = []
        m.state = "SELECTED"  # imaplib checks the state itself: get past it
        with pytest.raises(imaplib.IMAP4.error) as exc:
            m.fetch("1", "(FLAGS)")  # nothing selected
        errors.append(str(exc.value))
        m.select("INBOX")
        for seq, atts in (("4", "(FLAGS)"), ("1:x", "(FLAGS)"), ("1", "(FLAGS")):
            with pytest.raises(imaplib.IMAP4.error) as exc:
                m.fetch(seq, atts)
            errors.append(str(exc.value))
        errors.append(repr(m.fetch("1", "(ENVELOPE)")))
        m.logout()
        return errors

    errors = await in_thread(run)
    assert "No mailbox selected" in errors[0]
    assert "[CLIENTBUG] sequence number out of range (mailbox has 3 messages)" in errors[1]
    assert "Invalid sequence set: expected a number" in errors[2]
    assert "expected ')'" in errors[3] or "expected a single space" in errors[3]
    assert '(ENVELOPE (NIL "first" (("Bob" NIL "bob" "example.com"))' in errors[4]


async def test_list_lsub_status_namespace(env: Env) -> None:
    def run() -> tuple[Any, ...]:
        m = logged_in(env)
        everything = m.list()
        delim = m.list('""', '""')
        top = m.list('""', "%")
        lsub = m.lsub()
        status = m.status("INBOX", "(MESSAGES UNSEEN UIDNEXT UIDVALIDITY SIZE)")
        ns = m.namespace()
        m.logout()
        return everything, delim, top, lsub, status, ns

    everything, delim, top, lsub, status, ns = await in_thread(run)
    assert everything == (
        "OK",
        [
            b'(\\HasNoChildren) "/" "INBOX"',
            b'(\\Noselect \\HasChildren) "/" "Archive"',
            b'(\\HasNoChildren) "/" "Archive/2024"',
            b'(\\HasNoChildren \\Sent) "/" "Sent"',
        ],
    )
    assert delim == ("OK", [b'(\\Noselect) "/" ""'])
    assert top[1] == [
        b'(\\HasNoChildren) "/" "INBOX"',
        b'(\\Noselect \\HasChildren) "/" "Archive"',
        b'(\\HasNoChildren \\Sent) "/" "Sent"',
    ]
    assert lsub[1] == [b'(\\HasNoChildren) "/" "INBOX"', b'(\\HasNoChildren \\Sent) "/" "Sent"']
    size = sum(m.size for m in await env.store.messages(USER))
    uidvalidity = await env.uidvalidity()
    assert status == (
        "OK",
        [f'"INBOX" (MESSAGES 3 UNSEEN 2 UIDNEXT 4 UIDVALIDITY {uidvalidity} SIZE {size})'.encode()],
    )
    assert ns == ("OK", [b'(("" "/")) NIL NIL'])


async def test_noop_reports_new_and_expunged_messages(env: Env) -> None:
    def run() -> tuple[Any, ...]:
        m = logged_in(env)
        m.select("INBOX")
        env.blocking(env.add(env.make_message("fourth")))
        env.blocking(env.add(env.make_message("fifth")))
        env.blocking(env.expunge_elsewhere([1], event=False))  # a tombstone with its MODSEQ
        m.noop()
        exists = m.response("EXISTS")
        expunge = m.response("EXPUNGE")
        data = m.fetch("4", "(UID)")
        m.logout()
        return exists, expunge, data

    exists, expunge, data = await in_thread(run)
    assert expunge == ("EXPUNGE", [b"1"])
    assert exists == ("EXISTS", [b"3", b"4"])  # imaplib keeps SELECT's EXISTS too
    assert data == ("OK", [b"4 (UID 5)"])


async def test_close_expunges_and_unselect_does_not(env: Env) -> None:
    await env.set_flags(3, ["\\Deleted"], event=False)

    def run() -> tuple[Any, ...]:
        m = logged_in(env)
        m.select("INBOX")
        unsel = m._simple_command("UNSELECT")
        m.state = "AUTH"
        m.select("INBOX", readonly=True)
        ro_close = m.close()
        kept = 3 in env.blocking(env.uids())
        m.select("INBOX")
        rw_close = m.close()
        m.logout()
        return unsel[0], ro_close[0], kept, rw_close[0]

    assert await in_thread(run) == ("OK", "OK", True, "OK")
    assert 3 not in await env.uids()
    assert env.mail.made("expunge") == [(USER, "INBOX")]


async def test_bad_commands_and_wrong_state(env: Env) -> None:
    def run() -> list[str]:
        m = connect(env)
        out = []
        for call in (
            lambda: m.xatom("FROBNICATE"),
            lambda: m.select("INBOX"),  # imaplib checks state itself, so force it
            lambda: m._simple_command("STATUS", "INBOX", "(MESSAGES)"),
        ):
            m.state = "AUTH"
            try:
                out.append(repr(call()))
            except imaplib.IMAP4.error as e:
                out.append(str(e))
        m.logout()
        return out

    out = await in_thread(run)
    assert "unknown command 'FROBNICATE'" in out[0]
    assert "Log in first" in out[1]
    assert "Log in first" in out[2]


async def test_enable_imap4rev2_switches_to_utf8_names(env: Env) -> None:
    await env.store.app.repo.create_mailbox(USER, "Entwürfe")

    def run() -> tuple[Any, ...]:
        m = logged_in(env)
        rev1 = [x for x in m.list()[1] if b"Entw" in x]
        m.enable("IMAP4rev2")
        enabled = m.response("ENABLED")
        rev2 = [x for x in m.list()[1] if b"Entw" in x]
        m.select("INBOX")
        recent = m.response("RECENT")
        listed = m.response("LIST")
        m.logout()
        return rev1, enabled, rev2, recent, listed

    rev1, enabled, rev2, recent, listed = await in_thread(run)
    assert rev1 == [b'(\\HasNoChildren) "/" "Entw&APw-rfe"']
    assert enabled == ("ENABLED", [b"IMAP4rev2"])
    assert rev2 == ['(\\HasNoChildren) "/" "Entwürfe"'.encode()]
    assert recent == ("RECENT", [None])  # IMAP4rev2 has no RECENT
    assert listed == ("LIST", [b'() "/" "INBOX"'])


async def test_backend_unavailable_is_a_temporary_no(env: Env) -> None:
    def run() -> tuple[Any, ...]:
        m = connect(env)
        env.auth.down = True
        with pytest.raises(imaplib.IMAP4.error) as auth_err:
            m.login(USER, PASSWORD)
        env.auth.down = False
        m.login(USER, PASSWORD)
        env.mail.down = True
        sel = m.select("INBOX")
        env.mail.down = False
        m.logout()
        return str(auth_err.value), sel

    auth_err, sel = await in_thread(run)
    assert "[UNAVAILABLE]" in auth_err
    assert sel[0] == "NO" and b"[UNAVAILABLE]" in sel[1][0]


async def test_logout_and_metrics(env: Env) -> None:
    ok_before = metric("postmesh_imap_gw_commands_total", command="LOGIN", result="ok")
    bad_before = metric("postmesh_imap_gw_commands_total", command="UNKNOWN", result="bad")
    lat_before = metric("postmesh_imap_gw_command_duration_seconds_count", command="LOGIN")

    def run() -> tuple[Any, ...]:
        m = logged_in(env)
        active = metric("postmesh_imap_gw_sessions_active")
        with pytest.raises(imaplib.IMAP4.error):
            m.xatom("NOPE")
        bye = m.logout()
        return active, bye

    active, bye = await in_thread(run)
    assert active >= 1
    assert bye == ("BYE", [b"Logging out"])
    assert metric("postmesh_imap_gw_commands_total", command="LOGIN", result="ok") == ok_before + 1
    assert metric("postmesh_imap_gw_commands_total", command="UNKNOWN", result="bad") == (
        bad_before + 1
    )
    assert (
        metric("postmesh_imap_gw_command_duration_seconds_count", command="LOGIN") == lat_before + 1
    )
    for _ in range(50):  # the server closes its side right after the tagged OK
        if metric("postmesh_imap_gw_sessions_active") == 0:
            break
        await asyncio.sleep(0.02)
    assert metric("postmesh_imap_gw_sessions_active") == 0


async def test_failed_auth_limit_disconnects(make_env: Callable[..., Awaitable[Env]]) -> None:
    env = await make_env(imap_max_auth_failures=2)

    def run() -> list[str]:
        m = connect(env)
        out = []
        for _ in range(2):
            try:
                m.authenticate("PLAIN", lambda _: f"\0{USER}\0nope".encode())
            except imaplib.IMAP4.error as e:
                out.append(str(e))
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            m.noop()
        return out

    out = await in_thread(run)
    assert len(out) == 2 and all("AUTHENTICATIONFAILED" in e for e in out)


def test_b64_helper_sanity() -> None:
    # The raw-socket tests build SASL PLAIN by hand; check the encoding they rely on.
    assert base64.b64decode(base64.b64encode(b"\0u\0p")) == b"\0u\0p"
