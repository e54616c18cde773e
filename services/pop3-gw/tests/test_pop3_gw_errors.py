"""Bad input over raw sockets: every case answers a clear -ERR, never a crash, hang or lost mail."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from prometheus_client import REGISTRY

from postmesh.pop3_gw import session as session_module

if TYPE_CHECKING:
    from conftest import Env

USER = "alice@example.test"
PASSWORD = "s3cret pass word"
T = TypeVar("T")


async def in_thread(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


async def test_unknown_and_malformed_commands(env: Env) -> None:
    await env.backend.add(b"Subject: x\r\n\r\nbody\r\n")

    def run() -> list[bytes]:
        raw = env.raw_login()
        out = [
            raw.cmd("FOO bar"),
            raw.cmd(""),
            raw.cmd("RETR"),
            raw.cmd("RETR abc"),
            raw.cmd("RETR 0"),
            raw.cmd("RETR 2"),
            raw.cmd("LIST 99999999999"),
            raw.cmd("DELE 5"),
            raw.cmd("TOP 1"),
            raw.cmd("TOP 1 x"),
            raw.cmd("STAT extra"),
            raw.cmd(b"LIST \xff"),
            raw.cmd("LIST 1"),  # still works after all that
        ]
        raw.cmd("QUIT")
        raw.close()
        return out

    got = await in_thread(run)
    assert got == [
        b"-ERR Unknown command: FOO\r\n",
        b"-ERR Empty command\r\n",
        b"-ERR RETR needs an argument\r\n",
        b"-ERR Invalid message number: abc\r\n",
        b"-ERR Invalid message number: 0\r\n",
        b"-ERR There is no message 2.\r\n",
        b"-ERR Invalid message number: 99999999999\r\n",
        b"-ERR There is no message 5.\r\n",
        b"-ERR Missing arguments\r\n",
        b"-ERR Invalid line count: x\r\n",
        b"-ERR Too many arguments\r\n",
        b"-ERR Command is not valid UTF-8\r\n",
        b"+OK 1 20\r\n",
    ]


async def test_overlong_line_is_refused_and_session_continues(env: Env) -> None:
    def run() -> tuple[bytes, bytes, bytes]:
        raw = env.raw()
        long_line = raw.cmd("USER " + "a" * 5000)
        # Exactly at the limit (1024 octets with CRLF) is still accepted.
        at_limit = raw.cmd("USER " + "b" * (1024 - 7))
        after = raw.cmd("CAPA")
        raw.multi()
        raw.close()
        return long_line, at_limit, after

    long_line, at_limit, after = await in_thread(run)
    assert long_line == b"-ERR Line too long.\r\n"
    assert at_limit.startswith(b"+OK")
    assert after.startswith(b"+OK")


async def test_commands_in_the_wrong_state(env: Env) -> None:
    def run() -> tuple[list[bytes], list[bytes]]:
        raw = env.raw()
        before = [
            raw.cmd("STAT"),
            raw.cmd("RETR 1"),
            raw.cmd("NOOP"),
            raw.cmd("PASS x"),  # PASS without USER
        ]
        raw.cmd(f"USER {USER}")
        raw.cmd(f"PASS {PASSWORD}")
        after = [raw.cmd(f"USER {USER}"), raw.cmd("PASS x"), raw.cmd("AUTH PLAIN"), raw.cmd("STLS")]
        raw.cmd("QUIT")
        raw.close()
        return before, after

    before, after = await in_thread(run)
    assert before == [
        b"-ERR Not logged in.\r\n",
        b"-ERR Not logged in.\r\n",
        b"-ERR Not logged in.\r\n",
        b"-ERR No user name given (send USER first).\r\n",
    ]
    assert after == [
        b"-ERR Already logged in.\r\n",
        b"-ERR Already logged in.\r\n",
        b"-ERR Already logged in.\r\n",
        b"-ERR STLS is only allowed before login.\r\n",
    ]


async def test_too_many_bad_commands_close_the_connection(start_server: Any) -> None:
    service = await start_server(pop3_max_bad_commands=3)

    def run() -> list[bytes]:
        sock = socket.create_connection(("127.0.0.1", service.port), timeout=10)
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"X1\r\nX2\r\nX3\r\nX4\r\n")
        lines = [f.readline() for _ in range(4)]
        sock.close()
        return lines

    lines = await in_thread(run)
    assert lines[:2] == [b"-ERR Unknown command: X1\r\n", b"-ERR Unknown command: X2\r\n"]
    assert lines[2] == b"-ERR Too many invalid commands, closing connection.\r\n"
    assert lines[3] == b""  # closed


async def test_garbage_without_newline_is_bounded(start_server: Any) -> None:
    service = await start_server(pop3_max_bad_commands=3)

    def run() -> bytes:
        sock = socket.create_connection(("127.0.0.1", service.port), timeout=10)
        sock.recv(100)
        received = b""
        try:
            for _ in range(100):
                sock.sendall(b"x" * 1000)
        except OSError:
            pass  # the server hung up on us
        try:
            while chunk := sock.recv(4096):
                received += chunk
        except OSError:
            pass
        sock.close()
        return received

    received = await in_thread(run)
    # One answer when the limit is passed, then a hang-up once the line runs on far beyond it.
    assert received == b"-ERR Line too long.\r\n-ERR Line too long, closing connection.\r\n"


async def test_pipelining(env: Env) -> None:
    await env.backend.add(b"Subject: a\r\n\r\n.dot\r\n")
    await env.backend.add(b"Subject: b\r\n\r\nb\r\n")

    def run() -> bytes:
        raw = env.raw()
        # RFC 2449 §6.6: the whole batch in one write; answers come in order.
        raw.send(
            f"USER {USER}\r\nPASS {PASSWORD}\r\nSTAT\r\nLIST\r\nRETR 1\r\nDELE 2\r\nQUIT\r\n".encode()
        )
        data = b""
        while chunk := raw.sock.recv(4096):
            data += chunk
        raw.close()
        return data

    data = await in_thread(run)
    assert data == (
        b"+OK Send your password.\r\n"
        b"+OK Logged in, 2 messages (37 octets).\r\n"
        b"+OK 2 37\r\n"
        b"+OK 2 messages (37 octets)\r\n1 20\r\n2 17\r\n.\r\n"
        b"+OK 20 octets\r\nSubject: a\r\n\r\n..dot\r\n.\r\n"
        b"+OK Message 2 deleted.\r\n"
        b"+OK Logging out, 1 messages deleted.\r\n"
    )


async def test_stls_discards_pipelined_cleartext(env: Env) -> None:
    def run() -> tuple[bytes, bytes]:
        raw = env.raw()
        # A man in the middle appends a command behind STLS (CVE-2011-0411 class).
        raw.send(b"STLS\r\nCAPA\r\n")
        begin = raw.line()
        raw.starttls()
        first = raw.cmd("NOOP")
        raw.close()
        return begin, first

    begin, first = await in_thread(run)
    assert begin == b"+OK Begin TLS negotiation now.\r\n"
    # Had the injected CAPA run, its "+OK Capability list" would come first.
    assert first == b"-ERR Not logged in.\r\n"


async def test_stls_twice_and_on_implicit_tls(env: Env) -> None:
    def run() -> tuple[bytes, bytes]:
        raw = env.raw()
        raw.cmd("STLS")
        raw.starttls()
        again = raw.cmd("STLS")
        raw.close()
        tls = env.raw_tls()
        implicit = tls.cmd("STLS")
        tls.close()
        return again, implicit

    again, implicit = await in_thread(run)
    assert again == b"-ERR TLS is already active.\r\n"
    assert implicit == b"-ERR TLS is already active.\r\n"


async def test_idle_timeout_closes_without_update(start_server: Any, backend: Any) -> None:
    uid = await backend.add(b"Subject: x\r\n\r\nbody\r\n")
    service = await start_server(pop3_idle_timeout_seconds=0.3)

    def run() -> list[bytes]:
        sock = socket.create_connection(("127.0.0.1", service.port), timeout=10)
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(f"USER {USER}\r\nPASS {PASSWORD}\r\nDELE 1\r\n".encode())
        lines = [f.readline() for _ in range(5)]
        sock.close()
        return lines

    lines = await in_thread(run)
    assert lines[2] == b"+OK Message 1 deleted.\r\n"
    assert lines[3] == b"-ERR Disconnected for inactivity.\r\n"
    assert lines[4] == b""
    assert list(await backend.inbox()) == [uid]  # RFC 1939 §3: no UPDATE on autologout


async def test_plaintext_auth_needs_tls_from_non_loopback(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every test connection comes from 127.0.0.1; pretend the peer is remote (what
    # net.plaintext_auth_allowed decides from the peer address) to check the refusal.
    monkeypatch.setattr(session_module, "plaintext_auth_allowed", lambda _host, tls: tls)

    def run() -> tuple[list[bytes], list[bytes], list[bytes]]:
        raw = env.raw()
        assert raw.cmd("CAPA").startswith(b"+OK")
        caps_plain = raw.multi()
        refused = [
            raw.cmd(f"USER {USER}"),
            raw.cmd(f"PASS {PASSWORD}"),
            raw.cmd("AUTH PLAIN AGFsaWNlAHB3"),
        ]
        assert raw.cmd("AUTH").startswith(b"+OK")
        refused.append(b"|".join(raw.multi()))
        raw.cmd("STLS")
        raw.starttls()
        assert raw.cmd("CAPA").startswith(b"+OK")
        caps_tls = raw.multi()
        assert raw.cmd(f"USER {USER}").startswith(b"+OK")
        assert raw.cmd(f"PASS {PASSWORD}").startswith(b"+OK")
        raw.cmd("QUIT")
        raw.close()
        return caps_plain, refused, caps_tls

    caps_plain, refused, caps_tls = await in_thread(run)
    assert b"STLS\r\n" in caps_plain
    assert b"USER\r\n" not in caps_plain and b"SASL SCRAM-SHA-256\r\n" in caps_plain
    for line in refused[:3]:
        assert line.startswith(b"-ERR [AUTH] ") and b"TLS required" in line
    assert refused[3] == b"SCRAM-SHA-256\r\n"  # only the one that sends no password
    assert b"USER\r\n" in caps_tls and b"SASL SCRAM-SHA-256 PLAIN LOGIN\r\n" in caps_tls
    assert b"STLS\r\n" not in caps_tls


async def test_quit_before_login_and_metrics(env: Env) -> None:
    before = (
        REGISTRY.get_sample_value(
            "postmesh_pop3_gw_commands_total", {"command": "unknown", "result": "err"}
        )
        or 0.0
    )

    def run() -> tuple[bytes, bytes, bytes]:
        raw = env.raw()
        bad = raw.cmd("HELO")
        bye = raw.cmd("QUIT")
        closed = raw.line()
        raw.close()
        return bad, bye, closed

    bad, bye, closed = await in_thread(run)
    assert bad == b"-ERR Unknown command: HELO\r\n"
    assert bye == b"+OK Logging out.\r\n"
    assert closed == b""
    after = REGISTRY.get_sample_value(
        "postmesh_pop3_gw_commands_total", {"command": "unknown", "result": "err"}
    )
    assert after == before + 1


async def test_client_vanishing_mid_command_is_harmless(env: Env) -> None:
    await env.backend.add(b"Subject: x\r\n\r\n" + b"y" * 100_000 + b"\r\n")

    def run() -> None:
        raw = env.raw_login()
        raw.send(b"DELE 1\r\nRETR")  # half a command, then gone
        raw.close()

    await in_thread(run)
    await asyncio.sleep(0.1)
    assert len(await env.backend.inbox()) == 1
    # And the server still serves others.
    assert await in_thread(lambda: env.login().quit().startswith(b"+OK"))
