"""ID (RFC 2971), QUOTA (RFC 9208) and NAMESPACE (RFC 2342) over the wire, and the mailbox
commands driven by imaplib."""

from __future__ import annotations

import asyncio
import imaplib
import logging
from typing import TYPE_CHECKING, Any

import pytest
from imap_wire import PLAIN, Client

if TYPE_CHECKING:
    from store_env import StoreEnv as Env

# -- ID (RFC 2971) ---------------------------------------------------------------------------------


async def test_id_in_every_state_and_client_id_logged(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    c = await Client.connect(env)
    with caplog.at_level(logging.INFO, logger="postmesh.imap_gw.commands.id"):
        reply = await c.cmd(b'i1 ID ("name" "mutt" "version" "2.2" "os" NIL)')
    assert reply[0].startswith(b'* ID ("name" "Postmesh" "vendor" "Postmesh" "version" "')
    assert reply[1] == b"i1 OK ID completed"
    logged = [r for r in caplog.records if r.getMessage() == "client id"]
    assert logged and "mutt" in str(logged[0].__dict__)
    assert (await c.cmd(b"i2 id nil"))[-1] == b"i2 OK ID completed"
    assert (await c.cmd(b"L AUTHENTICATE PLAIN " + PLAIN))[-1].startswith(b"L OK")
    assert (await c.cmd(b"i3 ID ()"))[-1] == b"i3 OK ID completed"
    c.writer.close()


@pytest.mark.parametrize(
    "command",
    [
        b"ID",
        b"ID ",
        b'ID ("name")',
        b'ID ("name" "x"',
        b"ID (name x)",  # atoms are not strings
        b'ID ("name" "x") extra',
        b'ID ("' + b"f" * 31 + b'" "x")',  # field name over 30 octets
        b'ID ("name" "' + b"v" * 1025 + b'")',  # value over 1024 octets
        b"ID (" + b" ".join(b'"k%d" "v"' % i for i in range(31)) + b")",  # over 30 pairs
        b"ID NILL",
    ],
)
async def test_id_bad_input(env: Env, command: bytes) -> None:
    c = await Client.connect(env)
    reply = await c.cmd(b"t " + command)
    assert len(reply) == 1 and reply[0].startswith(b"t BAD "), reply
    assert await c.cmd(b"n NOOP") == [b"n OK NOOP completed"]
    c.writer.close()


# -- QUOTA (RFC 9208) ------------------------------------------------------------------------------


async def test_getquotaroot_and_getquota(env: Env) -> None:
    await env.set_quota(10 * 1024 * 1024, 1000)
    used = sum(m.size for m in await env.store.messages(env.user))
    c = await Client.login(env)
    assert await c.cmd(b"q1 GETQUOTAROOT INBOX") == [
        b'* QUOTAROOT "INBOX" ""',
        b'* QUOTA "" (STORAGE %d 10240 MESSAGE 3 1000)' % ((used + 1023) // 1024),
        b"q1 OK GETQUOTAROOT completed",
    ]
    assert await c.cmd(b'q2 GETQUOTA ""') == [
        b'* QUOTA "" (STORAGE %d 10240 MESSAGE 3 1000)' % ((used + 1023) // 1024),
        b"q2 OK GETQUOTA completed",
    ]
    # Only the limited resources are reported.
    await env.set_quota(0, 50)
    assert await c.cmd(b'q3 GETQUOTA ""') == [
        b'* QUOTA "" (MESSAGE 3 50)',
        b"q3 OK GETQUOTA completed",
    ]
    c.writer.close()


async def test_no_limits_means_no_quota_root(env: Env) -> None:
    c = await Client.login(env)
    assert await c.cmd(b"q1 GETQUOTAROOT Sent") == [
        b'* QUOTAROOT "Sent"',
        b"q1 OK GETQUOTAROOT completed",
    ]
    assert await c.cmd(b'q2 GETQUOTA ""') == [b"q2 NO [NONEXISTENT] No such quota root"]
    c.writer.close()


async def test_quota_errors_and_setquota_refused(env: Env) -> None:
    await env.set_quota(1024 * 1024, 0)
    c = await Client.login(env)
    assert await c.cmd(b"q1 GETQUOTA other") == [b"q1 NO [NONEXISTENT] No such quota root"]
    assert await c.cmd(b"q2 GETQUOTAROOT Nope") == [
        b"q2 NO [NONEXISTENT] Mailbox does not exist: Nope"
    ]
    assert await c.cmd(b'q3 SETQUOTA "" (STORAGE 512)') == [
        b"q3 NO [NOPERM] Quota limits are set by the administrator"
    ]
    for bad in (
        b"q4 GETQUOTA",
        b"q5 GETQUOTAROOT",
        b'q6 SETQUOTA ""',
        b'q7 SETQUOTA "" (STORAGE)',
        b'q8 SETQUOTA "" (STORAGE x)',
        b'q9 SETQUOTA "" (STORAGE 99999999999999999999)',
        b'q10 GETQUOTA "" extra',
        b"q11 GETQUOTAROOT &Jjo",
    ):
        reply = await c.cmd(bad)
        assert len(reply) == 1 and reply[0].startswith(bad.split(b" ")[0] + b" BAD "), reply
    assert await c.cmd(b"n NOOP") == [b"n OK NOOP completed"]
    c.writer.close()


async def test_quota_needs_login(env: Env) -> None:
    c = await Client.connect(env)
    assert await c.cmd(b'q GETQUOTA ""') == [b"q BAD Log in first"]
    assert await c.cmd(b"q GETQUOTAROOT INBOX") == [b"q BAD Log in first"]
    c.writer.close()


async def test_namespace(env: Env) -> None:
    c = await Client.login(env)
    assert await c.cmd(b"n NAMESPACE") == [
        b'* NAMESPACE (("" "/")) NIL NIL',
        b"n OK NAMESPACE completed",
    ]
    assert (await c.cmd(b"n2 NAMESPACE x"))[-1].startswith(b"n2 BAD ")
    c.writer.close()


# -- imaplib ---------------------------------------------------------------------------------------


def _imaplib_round_trip(env: Env) -> dict[str, Any]:
    m = imaplib.IMAP4("127.0.0.1", env.port)
    m.login(env.user, env.password)
    out: dict[str, Any] = {}
    out["create"] = m.create("Projects/Alpha")
    out["create_again"] = m.create("Projects/Alpha")
    out["subscribe"] = m.subscribe("Projects/Alpha")
    out["list"] = m.list('""', "Projects*")
    out["rename"] = m.rename("Projects", "Done")
    out["lsub"] = m.lsub('""', "Done/*")
    out["status"] = m.status("Done/Alpha", "(MESSAGES UIDNEXT UNSEEN SIZE)")
    out["unsubscribe"] = m.unsubscribe("Done/Alpha")
    out["delete_child"] = m.delete("Done/Alpha")
    out["delete_parent"] = m.delete("Done")
    out["delete_missing"] = m.delete("Done")
    out["list_after"] = m.list('""', "Done*")
    out["getquotaroot"] = m.getquotaroot("INBOX")
    m.logout()
    return out


async def test_imaplib_mailbox_round_trip(env: Env) -> None:
    out = await asyncio.to_thread(_imaplib_round_trip, env)
    assert out["create"] == ("OK", [b"CREATE completed"])
    assert out["create_again"] == (
        "NO",
        [b"[ALREADYEXISTS] Mailbox already exists: Projects/Alpha"],
    )
    assert out["subscribe"] == ("OK", [b"SUBSCRIBE completed"])
    assert out["list"] == (
        "OK",
        [b'(\\HasChildren) "/" "Projects"', b'(\\HasNoChildren) "/" "Projects/Alpha"'],
    )
    assert out["rename"] == ("OK", [b"RENAME completed"])
    assert out["lsub"] == ("OK", [b'(\\HasNoChildren) "/" "Done/Alpha"'])
    assert out["status"] == (
        "OK",
        [b'"Done/Alpha" (MESSAGES 0 UIDNEXT 1 UNSEEN 0 SIZE 0)'],
    )
    assert out["unsubscribe"][0] == "OK"
    assert out["delete_child"][0] == "OK" and out["delete_parent"][0] == "OK"
    assert out["delete_missing"] == ("NO", [b"[NONEXISTENT] Mailbox does not exist: Done"])
    assert out["list_after"] == ("OK", [None])
    assert out["getquotaroot"] == ("OK", [[b'"INBOX"'], [None]])
