"""Whole sessions over real sockets with Python's poplib against the real store in-process."""

from __future__ import annotations

import asyncio
import base64
import poplib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from prometheus_client import REGISTRY

if TYPE_CHECKING:
    from conftest import Env

USER = "alice@example.test"
PASSWORD = "s3cret pass word"
T = TypeVar("T")


async def in_thread(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


def msg(subject: str, body: str = "Hello.\r\n") -> bytes:
    return (
        f"From: Bob <bob@example.com>\r\nTo: {USER}\r\nSubject: {subject}\r\n\r\n" + body
    ).encode()


def plain(authzid: str, user: str, password: str) -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


def no_verify() -> Any:
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_capa_on_loopback_offers_user_sasl_and_stls(env: Env) -> None:
    def run() -> dict[str, list[str]]:
        pop = env.pop()
        assert pop.getwelcome().startswith(b"+OK")
        caps = pop.capa()
        pop.quit()
        return caps

    caps = await in_thread(run)
    for cap in ("TOP", "UIDL", "USER", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "STLS"):
        assert cap in caps
    assert caps["SASL"] == ["SCRAM-SHA-256", "PLAIN", "LOGIN"]
    assert caps["UTF8"] == ["USER"]
    assert caps["IMPLEMENTATION"] == ["Postmesh"]
    assert caps["EXPIRE"] == ["NEVER"]
    assert "LOGIN-DELAY" not in caps


async def test_user_pass_and_listing_values(env: Env) -> None:
    a, b = msg("one"), msg("two", "A longer body.\r\nSecond line.\r\n")
    uid_a, uid_b = await env.backend.add(a), await env.backend.add(b)

    def run() -> tuple[Any, ...]:
        pop = env.pop()
        assert pop.user(USER).startswith(b"+OK")
        assert pop.pass_(PASSWORD).startswith(b"+OK")
        stat = pop.stat()
        listing = pop.list()
        one = pop.list(2)
        uidl = pop.uidl()
        uid_one = pop.uidl(1)
        assert pop.noop() == b"+OK"
        pop.quit()
        return stat, listing, one, uidl, uid_one

    stat, listing, one, uidl, uid_one = await in_thread(run)
    uidvalidity = (await env.backend.store.app.repo.get_mailbox(USER, "INBOX")).uidvalidity
    assert stat == (2, len(a) + len(b))
    assert listing[1] == [f"1 {len(a)}".encode(), f"2 {len(b)}".encode()]
    assert one == f"+OK 2 {len(b)}".encode()
    assert uidl[1] == [f"1 {uidvalidity}.{uid_a}".encode(), f"2 {uidvalidity}.{uid_b}".encode()]
    assert uid_one == f"+OK 1 {uidvalidity}.{uid_a}".encode()
    # The fake saw the canonical user name and where the client came from.
    assert ("authenticate", (USER, "127.0.0.1", "")) in env.backend.calls


async def test_uidl_is_stable_across_sessions(env: Env) -> None:
    await env.backend.add(msg("one"))
    await env.backend.add(msg("two"))

    def uidl() -> list[bytes]:
        pop = env.login()
        lines = pop.uidl()[1]
        pop.quit()
        return [line.split()[1] for line in lines]

    first = await in_thread(uidl)
    assert first == await in_thread(uidl)
    assert len(set(first)) == 2


async def test_bad_password_then_good_on_same_connection(env: Env) -> None:
    before = metric("postmesh_pop3_gw_logins_total", mechanism="USER", result="fail")

    def run() -> bytes:
        pop = env.pop()
        pop.user(USER)
        with pytest.raises(poplib.error_proto) as exc:
            pop.pass_("wrong")
        pop.user(USER)
        pop.pass_(PASSWORD)
        pop.quit()
        return bytes(exc.value.args[0])

    text = await in_thread(run)
    assert text.startswith(b"-ERR [AUTH] ")
    assert metric("postmesh_pop3_gw_logins_total", mechanism="USER", result="fail") == before + 1


async def test_too_many_failed_logins_close_the_connection(start_server: Any) -> None:
    service = await start_server(pop3_max_auth_failures=2)

    def run() -> tuple[bytes, bytes, bytes]:
        pop = poplib.POP3("127.0.0.1", service.port, timeout=10)
        results = []
        for _ in range(2):
            pop.user(USER)
            try:
                pop.pass_("wrong")
            except poplib.error_proto as e:
                results.append(bytes(e.args[0]))
        rest = pop.file.readline()
        pop.close()
        return results[0], results[1], rest

    first, second, rest = await in_thread(run)
    assert first == b"-ERR [AUTH] Authentication failed."
    assert second.startswith(b"-ERR [AUTH] ") and b"closing" in second
    assert rest == b""  # closed by the server


async def test_auth_plain_with_initial_response(env: Env) -> None:
    await env.backend.add(msg("one"))

    def run() -> tuple[bytes, tuple[int, int]]:
        pop = env.pop()
        resp = pop._shortcmd("AUTH PLAIN " + plain("", USER, PASSWORD))
        stat = pop.stat()
        pop.quit()
        return resp, stat

    resp, stat = await in_thread(run)
    assert resp.startswith(b"+OK")
    assert stat[0] == 1
    assert ("authenticate", (USER, "127.0.0.1", "PLAIN")) in env.backend.calls


async def test_auth_plain_with_continuation_and_cancel(env: Env) -> None:
    def run() -> list[bytes]:
        pop = env.pop()
        out = []
        pop._putcmd("AUTH PLAIN")
        out.append(pop._getline()[0])  # "+ "
        pop._putcmd("*")
        try:
            pop._getresp()
        except poplib.error_proto as e:
            out.append(bytes(e.args[0]))
        pop._putcmd("AUTH PLAIN")
        out.append(pop._getline()[0])
        pop._putcmd(plain(USER, USER, PASSWORD))  # authzid equal to authcid is fine
        out.append(pop._getresp())
        pop.quit()
        return out

    challenge, cancelled, challenge2, ok = await in_thread(run)
    assert challenge == challenge2 == b"+ "
    assert cancelled == b"-ERR Authentication cancelled."
    assert ok.startswith(b"+OK")


async def test_auth_plain_failures(env: Env) -> None:
    def run() -> list[bytes]:
        pop = env.pop()
        out = []
        for line in (
            "AUTH PLAIN " + plain("", USER, "wrong"),
            "AUTH PLAIN " + plain("bob@example.test", USER, PASSWORD),
            "AUTH PLAIN not-base64!",
            "AUTH PLAIN =",
            "AUTH CRAM-MD5",
        ):
            try:
                pop._shortcmd(line)
            except poplib.error_proto as e:
                out.append(bytes(e.args[0]))
        pop.quit()
        return out

    wrong, authzid, garbage, empty, mech = await in_thread(run)
    assert wrong == b"-ERR [AUTH] Authentication failed."
    assert authzid == b"-ERR [AUTH] Authentication failed: authorization identity not permitted."
    assert garbage.startswith(b"-ERR Invalid SASL PLAIN response")
    assert empty.startswith(b"-ERR Invalid SASL PLAIN response")
    assert mech == b"-ERR Unsupported authentication mechanism."


async def test_auth_without_mechanism_lists_mechanisms(env: Env) -> None:
    def run() -> list[bytes]:
        pop = env.pop()
        _, lines, _ = pop._longcmd("AUTH")
        pop.quit()
        return list(lines)

    assert await in_thread(run) == [b"SCRAM-SHA-256", b"PLAIN", b"LOGIN"]


async def test_stls_then_login(env: Env) -> None:
    await env.backend.add(msg("secret"))

    def run() -> tuple[bytes, dict[str, list[str]], int]:
        pop = env.pop()
        resp = pop.stls(no_verify())
        caps = pop.capa()
        pop.user(USER)
        pop.pass_(PASSWORD)
        count = pop.stat()[0]
        pop.quit()
        return resp, caps, count

    resp, caps, count = await in_thread(run)
    assert resp.startswith(b"+OK")
    assert "STLS" not in caps  # RFC 2595 §4: not offered once TLS is active
    assert "USER" in caps
    assert count == 1


async def test_implicit_tls(env: Env) -> None:
    content = msg("over tls")
    await env.backend.add(content)

    def run() -> tuple[dict[str, list[str]], bytes]:
        pop = poplib.POP3_SSL("127.0.0.1", env.tls_port, context=no_verify(), timeout=10)
        caps = pop.capa()
        pop.user(USER)
        pop.pass_(PASSWORD)
        _, lines, _ = pop.retr(1)
        pop.quit()
        return caps, b"\r\n".join(lines) + b"\r\n"

    caps, got = await in_thread(run)
    assert "STLS" not in caps
    assert got == content


async def test_retr_is_byte_for_byte_with_dot_stuffing(env: Env) -> None:
    body = ".starts with a dot\r\n..two dots\r\n.\r\nmiddle\r\n. spaced\r\nend\r\n"
    content = msg("dots", body)
    await env.backend.add(content)
    bytes_before = metric("postmesh_pop3_gw_retrieved_bytes_total")
    ok_before = metric("postmesh_pop3_gw_commands_total", command="RETR", result="ok")

    def run() -> tuple[bytes, list[bytes], int, bytes]:
        pop = env.login()
        resp, lines, octets = pop.retr(1)
        # Read the stuffed form directly, too.
        pop._putcmd("RETR 1")
        pop._getresp()
        raw = []
        while (line := pop.file.readline()) != b".\r\n":
            raw.append(line)
        pop.quit()
        return resp, lines, octets, b"".join(raw)

    resp, lines, octets, wire = await in_thread(run)
    got = b"\r\n".join(lines) + b"\r\n"
    assert got == content
    assert octets == len(content)
    assert resp == f"+OK {len(content)} octets".encode()
    assert b"\r\n..starts with a dot\r\n...two dots\r\n..\r\nmiddle\r\n.. spaced\r\n" in wire
    assert metric("postmesh_pop3_gw_retrieved_bytes_total") > bytes_before + 2 * len(content)
    assert metric("postmesh_pop3_gw_commands_total", command="RETR", result="ok") == ok_before + 2


async def test_retr_normalises_bare_lf(env: Env) -> None:
    await env.backend.add(b"Subject: lf\n\nline one\n.dot\n")

    def run() -> list[bytes]:
        pop = env.login()
        lines = pop.retr(1)[1]
        pop.quit()
        return list(lines)

    assert await in_thread(run) == [b"Subject: lf", b"", b"line one", b".dot"]


async def test_top(env: Env) -> None:
    await env.backend.add(msg("top", "b1\r\n.b2\r\nb3\r\n"))

    def run() -> tuple[list[bytes], list[bytes], list[bytes]]:
        pop = env.login()
        zero = pop.top(1, 0)[1]
        two = pop.top(1, 2)[1]
        many = pop.top(1, 99)[1]
        pop.quit()
        return list(zero), list(two), list(many)

    zero, two, many = await in_thread(run)
    head = [b"From: Bob <bob@example.com>", f"To: {USER}".encode(), b"Subject: top", b""]
    assert zero == head
    assert two == [*head, b"b1", b".b2"]
    assert many == [*head, b"b1", b".b2", b"b3"]
    # TOP does not count as reading the message: no \Seen at QUIT.
    assert not any(c[0] == "add_flags" for c in env.backend.calls)


async def test_dele_and_quit_expunges_exactly_those(env: Env) -> None:
    uids = [await env.backend.add(msg(f"m{i}")) for i in range(4)]
    # Flagged \Deleted by an IMAP client but not expunged: not POP3's to remove.
    imap_deleted = await env.backend.add(msg("imap"), flags=["\\Deleted"])

    def run() -> tuple[bytes, bytes, tuple[int, int], bytes]:
        pop = env.login()
        d1 = pop.dele(2)
        pop.dele(4)
        stat = pop.stat()
        with pytest.raises(poplib.error_proto) as exc:
            pop.retr(2)
        bye = pop.quit()
        return d1, bye, stat, bytes(exc.value.args[0])

    d1, bye, stat, retr_deleted = await in_thread(run)
    assert d1.startswith(b"+OK")
    assert stat[0] == 3
    assert retr_deleted == b"-ERR Message 2 is deleted."
    assert bye.startswith(b"+OK") and b"2 messages deleted" in bye
    remaining = sorted(await env.backend.inbox())
    assert remaining == [uids[0], uids[2], imap_deleted]
    assert ("expunge", [uids[1], uids[3]]) in env.backend.calls


async def test_dele_without_quit_deletes_nothing(env: Env) -> None:
    uids = [await env.backend.add(msg(f"m{i}")) for i in range(2)]

    def run() -> None:
        pop = env.login()
        pop.dele(1)
        pop.retr(2)
        pop.close()  # the connection drops without QUIT

    await in_thread(run)
    await asyncio.sleep(0.1)  # let the server notice the close
    assert sorted(await env.backend.inbox()) == uids
    assert all(not m.flags for m in (await env.backend.inbox()).values())
    assert not [c for c in env.backend.calls if c[0] in ("add_flags", "expunge")]


async def test_rset_unmarks(env: Env) -> None:
    uids = [await env.backend.add(msg(f"m{i}")) for i in range(2)]

    def run() -> tuple[bytes, tuple[int, int]]:
        pop = env.login()
        pop.dele(1)
        pop.dele(2)
        resp = pop.rset()
        stat = pop.stat()
        pop.quit()
        return resp, stat

    resp, stat = await in_thread(run)
    assert resp.startswith(b"+OK Maildrop has 2 messages")
    assert stat[0] == 2
    assert sorted(await env.backend.inbox()) == uids
    assert not [c for c in env.backend.calls if c[0] == "expunge"]


async def test_retr_marks_seen_at_quit(env: Env) -> None:
    first = await env.backend.add(msg("read"))
    await env.backend.add(msg("unread"))

    def run() -> None:
        pop = env.login()
        pop.retr(1)
        pop.quit()

    await in_thread(run)
    assert ("add_flags", ([first], ["\\Seen"])) in env.backend.calls
    assert [m.flags for m in (await env.backend.inbox()).values()] == [{"\\Seen"}, set()]


async def test_rset_undoes_the_seen_of_retr(env: Env) -> None:
    await env.backend.add(msg("read, then reset"))
    second = await env.backend.add(msg("read after the reset"))

    def run() -> None:
        pop = env.login()
        pop.retr(1)
        pop.rset()
        pop.retr(2)
        pop.quit()

    await in_thread(run)
    assert [c for c in env.backend.calls if c[0] == "add_flags"] == [
        ("add_flags", ([second], ["\\Seen"]))
    ]
    assert [m.flags for m in (await env.backend.inbox()).values()] == [set(), {"\\Seen"}]


async def test_store_failure_on_quit_loses_nothing(env: Env) -> None:
    uids = [await env.backend.add(msg(f"m{i}")) for i in range(3)]
    env.backend.failing.add("expunge")

    def run() -> bytes:
        pop = env.login()
        pop.dele(1)
        pop.dele(3)
        with pytest.raises(poplib.error_proto) as exc:
            pop.quit()
        return bytes(exc.value.args[0])

    text = await in_thread(run)
    assert text.startswith(b"-ERR [SYS/TEMP] ")
    assert sorted(await env.backend.inbox()) == uids
    # The \Deleted flags set for the UPDATE were taken back.
    assert all("\\Deleted" not in m.flags for m in (await env.backend.inbox()).values())


async def test_auth_backend_down_is_temporary(env: Env) -> None:
    env.backend.failing.add("authenticate")

    def run() -> bytes:
        pop = env.pop()
        pop.user(USER)
        with pytest.raises(poplib.error_proto) as exc:
            pop.pass_(PASSWORD)
        pop.quit()
        return bytes(exc.value.args[0])

    assert (await in_thread(run)).startswith(b"-ERR [SYS/TEMP] ")


async def test_store_down_at_login_is_temporary(env: Env) -> None:
    env.backend.failing.add("open_maildrop")

    def run() -> tuple[bytes, bytes]:
        pop = env.pop()
        pop.user(USER)
        with pytest.raises(poplib.error_proto) as exc:
            pop.pass_(PASSWORD)
        # Still in AUTHORIZATION: a retry works once the store is back.
        env.backend.failing.clear()
        pop.user(USER)
        ok = pop.pass_(PASSWORD)
        pop.quit()
        return bytes(exc.value.args[0]), ok

    text, ok = await in_thread(run)
    assert text.startswith(b"-ERR [SYS/TEMP] ")
    assert ok.startswith(b"+OK")


async def test_retr_of_a_message_expunged_elsewhere(env: Env) -> None:
    uid = await env.backend.add(msg("gone"))
    await env.backend.add(msg("kept"))

    def run() -> tuple[bytes, list[bytes]]:
        pop = env.login()
        env.backend.expunge_elsewhere(uid)  # an IMAP client expunged it meanwhile
        with pytest.raises(poplib.error_proto) as exc:
            pop.retr(1)
        lines = pop.retr(2)[1]
        pop.quit()
        return bytes(exc.value.args[0]), list(lines)

    text, lines = await in_thread(run)
    assert text == b"-ERR Message 1 was expunged by another session."
    assert b"Subject: kept" in lines


async def test_store_down_before_retr_is_temporary(env: Env) -> None:
    await env.backend.add(msg("x"))

    def run() -> tuple[bytes, tuple[int, int]]:
        pop = env.login()
        env.backend.failing.add("fetch")
        with pytest.raises(poplib.error_proto) as exc:
            pop.retr(1)
        stat = pop.stat()  # the session goes on
        pop.quit()
        return bytes(exc.value.args[0]), stat

    text, stat = await in_thread(run)
    assert text.startswith(b"-ERR [SYS/TEMP] ")
    assert stat[0] == 1


async def test_store_failing_mid_message_hangs_up_and_deletes_nothing(
    start_server: Callable[..., Any], env: Env
) -> None:
    # RETR streaming from the store (read-ahead off: a message held whole cannot break).
    direct = type(env)(env.backend, await start_server(pop3_read_ahead_window_octets=0))
    uids = [await env.backend.add(msg("big", "x" * 200 + "\r\n")) for _ in range(2)]
    env.backend.fetch_fail_after = 3

    def run() -> bytes:
        pop = direct.login()
        pop.dele(2)
        pop._putcmd("RETR 1")
        first = pop._getresp()
        rest = b""
        while chunk := pop.sock.recv(4096):
            rest += chunk
        pop.close()
        return first + b"|" + rest

    got = await in_thread(run)
    assert got.startswith(b"+OK")
    assert not got.endswith(b"\r\n.\r\n")  # no terminator: the client knows it is incomplete
    assert sorted(await env.backend.inbox()) == uids


async def test_many_messages(env: Env) -> None:
    contents = [msg(f"n{i}", f"body {i}\r\n") for i in range(50)]
    for c in contents:
        await env.backend.add(c)

    def run() -> list[bytes]:
        pop = env.login()
        count, _ = pop.stat()
        out = [b"\r\n".join(pop.retr(n)[1]) + b"\r\n" for n in range(1, count + 1)]
        pop.quit()
        return out

    assert await in_thread(run) == contents
