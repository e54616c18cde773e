"""AUTH LOGIN and SCRAM-SHA-256 (RFC 5034), lockout answers, UTF8 (RFC 6856) and login floods,
over raw sockets against the fake backend."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from postmesh.common.sasl.client import ScramClient

if TYPE_CHECKING:
    from conftest import Env, Raw

USER = "alice@example.test"
PASSWORD = "s3cret pass word"
T = TypeVar("T")


async def in_thread(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


def b64(raw: str | bytes) -> str:
    return base64.b64encode(raw.encode() if isinstance(raw, str) else raw).decode()


def challenge(line: bytes) -> bytes:
    assert line.startswith(b"+ ") and line.endswith(b"\r\n"), line
    return base64.b64decode(line[2:-2])


def scram_login(raw: Raw, password: str, *, initial: bool) -> tuple[list[bytes], ScramClient]:
    """A SCRAM-SHA-256 exchange; returns the server's lines after the client's first message."""
    client = ScramClient(USER, password)
    if initial:
        first = raw.cmd("AUTH SCRAM-SHA-256 " + b64(client.first()))
    else:
        assert raw.cmd("AUTH SCRAM-SHA-256") == b"+ \r\n"
        first = raw.cmd(b64(client.first()))
    if not first.startswith(b"+ "):
        return [first], client
    final = raw.cmd(b64(client.final(challenge(first))))
    if not final.startswith(b"+ "):
        return [first, final], client
    # RFC 5034 §4: the server signature comes as a challenge, answered with an empty line.
    assert client.verify(challenge(final))
    return [first, final, raw.cmd("")], client


async def test_auth_login_with_and_without_initial_response(env: Env) -> None:
    def run() -> list[bytes]:
        raw = env.raw()
        out = [raw.cmd("AUTH LOGIN"), raw.cmd(b64(USER)), raw.cmd(b64(PASSWORD)), raw.cmd("QUIT")]
        raw.close()
        raw = env.raw()
        out += [raw.cmd("AUTH LOGIN " + b64(USER)), raw.cmd(b64(PASSWORD)), raw.cmd("STAT")]
        raw.cmd("QUIT")
        raw.close()
        return out

    out = await in_thread(run)
    assert challenge(out[0]) == b"Username:" and challenge(out[1]) == b"Password:"
    assert out[2].startswith(b"+OK Logged in")
    assert challenge(out[4]) == b"Password:" and out[5].startswith(b"+OK Logged in")
    assert out[6] == b"+OK 0 0\r\n"
    assert ("authenticate", (USER, "127.0.0.1", "LOGIN")) in env.backend.calls


async def test_auth_login_cancel_bad_base64_and_wrong_password(env: Env) -> None:
    def run() -> list[bytes]:
        raw = env.raw()
        out = [raw.cmd("AUTH LOGIN"), raw.cmd(b64(USER)), raw.cmd("*")]
        out += [raw.cmd("AUTH LOGIN"), raw.cmd("%%%")]
        out += [raw.cmd("AUTH LOGIN " + b64(USER)), raw.cmd(b64("wrong"))]
        out += [raw.cmd("AUTH LOGIN " + b64(USER)), raw.cmd(b64(PASSWORD))]
        raw.close()
        return out

    out = await in_thread(run)
    assert out[2] == b"-ERR Authentication cancelled.\r\n"
    assert out[4] == b"-ERR Invalid SASL LOGIN response: invalid base64 data.\r\n"
    assert out[6] == b"-ERR [AUTH] Authentication failed.\r\n"
    assert out[8].startswith(b"+OK Logged in")  # the session survived all of it


async def test_scram_sha_256_login_with_and_without_initial_response(env: Env) -> None:
    await env.backend.add(b"Subject: s\r\n\r\nscram\r\n")

    def run() -> list[list[bytes]]:
        results = []
        for initial in (True, False):
            raw = env.raw()
            lines, _ = scram_login(raw, PASSWORD, initial=initial)
            lines.append(raw.cmd("STAT"))
            raw.cmd("QUIT")
            raw.close()
            results.append(lines)
        return results

    for lines in await in_thread(run):
        server_first = challenge(lines[0]).decode()
        assert (
            server_first.startswith("r=")
            and ",s=" in server_first
            and server_first.endswith(",i=4096")
        )
        assert lines[2].startswith(b"+OK Logged in, 1 messages")
        assert lines[3] == b"+OK 1 21\r\n"
    assert ("verify_scram", (USER, "127.0.0.1")) in env.backend.calls


async def test_scram_refusals(start_server: Callable, env: Env) -> None:  # type: ignore[type-arg]
    lenient = type(env)(env.backend, await start_server(pop3_max_auth_failures=10))

    def run() -> list[bytes]:
        raw = lenient.raw()
        out, _ = scram_login(raw, "wrong password", initial=True)
        # Channel binding demanded: refused cleanly, the session goes on.
        out.append(raw.cmd("AUTH SCRAM-SHA-256 " + b64("p=tls-unique,,n=alice,r=abc")))
        out.append(raw.cmd("AUTH SCRAM-SHA-256 " + b64("garbage")))
        # A wrong nonce in client-final.
        first = raw.cmd("AUTH SCRAM-SHA-256 " + b64(f"n,,n={USER},r=abc"))
        out.append(raw.cmd(b64("c=biws,r=other,p=" + b64(b"x" * 32))))
        out.append(first[:2])
        raw.close()
        return out

    wrong_first, wrong, binding, garbage, nonce, first = await in_thread(run)
    assert wrong_first.startswith(b"+ ") and first == b"+ "
    assert wrong == b"-ERR [AUTH] Authentication failed.\r\n"
    assert binding == b"-ERR [AUTH] Authentication failed: channel binding is not supported.\r\n"
    assert garbage.startswith(b"-ERR Invalid SASL SCRAM-SHA-256 response: ")
    assert nonce == b"-ERR [AUTH] Authentication failed: SCRAM nonce does not match.\r\n"


async def test_scram_nonempty_answer_to_server_signature_fails(env: Env) -> None:
    def run() -> bytes:
        raw = env.raw()
        client = ScramClient(USER, PASSWORD)
        first = raw.cmd("AUTH SCRAM-SHA-256 " + b64(client.first()))
        final = raw.cmd(b64(client.final(challenge(first))))
        assert final.startswith(b"+ ")
        answer = raw.cmd(b64("unexpected"))
        raw.close()
        return answer

    assert await in_thread(run) == (
        b"-ERR [AUTH] Authentication failed: unexpected final response.\r\n"
    )


async def test_loopback_offers_every_mechanism(env: Env) -> None:
    # Loopback counts as secure (ADR 0004); the non-loopback case is in test_pop3_gw_errors.
    def run() -> bytes:
        raw = env.raw()
        raw.cmd("CAPA")
        caps = b"".join(raw.multi())
        raw.close()
        return caps

    assert b"SASL SCRAM-SHA-256 PLAIN LOGIN\r\n" in await in_thread(run)


async def test_lockout_answers_login_delay(env: Env) -> None:
    env.backend.auth.locked_for = 42

    def run() -> list[bytes]:
        raw = env.raw()
        out = [raw.cmd(f"USER {USER}"), raw.cmd(f"PASS {PASSWORD}")]
        out.append(raw.cmd("AUTH PLAIN " + b64(f"\0{USER}\0{PASSWORD}")))
        out.append(raw.cmd("AUTH SCRAM-SHA-256 " + b64(ScramClient(USER, PASSWORD).first())))
        raw.close()
        return out

    out = await in_thread(run)
    assert out[1] == b"-ERR [LOGIN-DELAY] Too many failed logins; try again in 42 seconds.\r\n"
    assert out[2] == out[1]
    # The third failure of the session also closes it, still saying why.
    assert out[3] == (
        b"-ERR [LOGIN-DELAY] Too many failed logins; try again in 42 seconds; too many "
        b"failures, closing connection.\r\n"
    )


async def test_login_flood_closes_each_session_but_not_the_server(env: Env) -> None:
    def run() -> list[list[bytes]]:
        sessions = []
        for _ in range(3):
            raw = env.raw()
            lines = []
            for _ in range(3):
                raw.cmd(f"USER {USER}")
                lines.append(raw.cmd("PASS guess"))
            lines.append(raw.line())  # connection closed by the server
            raw.close()
            sessions.append(lines)
        raw = env.raw_login()
        sessions.append([raw.cmd("QUIT")])
        raw.close()
        return sessions

    *floods, last = await in_thread(run)
    for lines in floods:
        assert lines[:2] == [b"-ERR [AUTH] Authentication failed.\r\n"] * 2
        assert lines[2].startswith(b"-ERR [AUTH] ") and b"closing connection" in lines[2]
        assert lines[3] == b""
    assert last[0].startswith(b"+OK")


async def test_utf8_command_and_utf8_user_names(env: Env) -> None:
    env.backend.auth.passwords["jörg@example.test"] = "pässwort"

    def run() -> list[bytes]:
        raw = env.raw()
        out = [raw.cmd("UTF8"), raw.cmd("UTF8 extra")]
        out += [raw.cmd("USER jörg@example.test"), raw.cmd("PASS pässwort"), raw.cmd("UTF8")]
        raw.cmd("QUIT")
        raw.close()
        return out

    out = await in_thread(run)
    assert out[0] == b"+OK UTF8 enabled.\r\n"
    assert out[1] == b"-ERR Too many arguments\r\n"
    assert out[3].startswith(b"+OK Logged in")
    assert out[4] == b"-ERR UTF8 is only allowed before login.\r\n"


async def test_overlong_sasl_response(env: Env) -> None:
    def run() -> list[bytes]:
        raw = env.raw()
        out = [raw.cmd("AUTH LOGIN"), raw.cmd("A" * 20000), raw.cmd("NOOP")]
        raw.close()
        return out

    out = await in_thread(run)
    assert out[1] == b"-ERR Authentication response too long.\r\n"
    assert out[2] == b"-ERR Not logged in.\r\n"  # still in AUTHORIZATION, session intact
