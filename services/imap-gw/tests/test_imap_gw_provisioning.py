"""A user who never received mail logs in: the store provisions INBOX (and special-use
mailboxes) at login, so LIST and SELECT work at once."""

from __future__ import annotations

import asyncio
import imaplib
from typing import TYPE_CHECKING

import pytest

from postmesh.store.errors import UnknownUser

if TYPE_CHECKING:
    from store_env import StoreEnv as Env

NEW_USER, NEW_PASSWORD = "newcomer@example.org", "first-login"


async def test_login_provisions_a_new_user(env: Env) -> None:
    env.auth.passwords[NEW_USER] = NEW_PASSWORD
    with pytest.raises(UnknownUser):
        await env.store.app.repo.list_mailboxes(NEW_USER)

    def run() -> tuple[list[bytes], bytes]:
        m = imaplib.IMAP4("127.0.0.1", env.port, timeout=10)
        m.login(NEW_USER, NEW_PASSWORD)
        _, listing = m.list()
        _, exists = m.select("INBOX")
        m.logout()
        return [x for x in listing if isinstance(x, bytes)], exists[0] or b""

    listing, exists = await asyncio.to_thread(run)
    assert (NEW_USER,) in env.mail.made("provision_user")
    assert any(b'"INBOX"' in line or line.endswith(b" INBOX") for line in listing)
    assert exists == b"0"
    assert [m.name for m in await env.store.app.repo.list_mailboxes(NEW_USER)] == [
        "Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash",
    ]  # fmt: skip


async def test_store_down_at_login_is_a_temporary_failure(env: Env) -> None:
    env.mail.down = True

    def run() -> str:
        m = imaplib.IMAP4("127.0.0.1", env.port, timeout=10)
        try:
            m.login("alice@example.org", 's3cret pass\\"word')
        except imaplib.IMAP4.error as e:
            return str(e)
        finally:
            m.shutdown()
        return "logged in"

    assert "[UNAVAILABLE]" in await asyncio.to_thread(run)
