"""Fails loudly when an aiosmtpd (or asyncio) upgrade changes the internals the adapter uses."""

from __future__ import annotations

import asyncio
import smtplib
from typing import TYPE_CHECKING

import aiosmtpd
import pytest

from postmesh.smtp_edge import aiosmtpd_adapter
from postmesh.smtp_edge.aiosmtpd_adapter import INSTANCE_MEMBERS, check_compatibility

if TYPE_CHECKING:
    from conftest import Edge


def test_installed_aiosmtpd_has_every_member_the_adapter_uses() -> None:
    check_compatibility()  # raises AiosmtpdIncompatible naming what changed
    assert aiosmtpd.__version__.startswith("1.4."), "re-check the adapter for a new aiosmtpd"


def test_a_missing_member_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(aiosmtpd_adapter._CLASS_MEMBERS, "_no_such_member", "function")
    with pytest.raises(aiosmtpd_adapter.AiosmtpdIncompatible, match="_no_such_member is gone"):
        check_compatibility()


async def test_live_session_has_the_instance_members(edge: Edge) -> None:
    """The instance attributes exist on a real connection, before and after STARTTLS."""
    seen: list[list[str]] = []

    def run() -> None:
        with smtplib.SMTP("127.0.0.1", edge.mx, timeout=10) as s:
            s.ehlo("client.test")
            sessions = list(edge.service.sessions)
            seen.append([m for m in INSTANCE_MEMBERS if not hasattr(sessions[0], m)])
            assert not sessions[0].starttls_completed()

    await asyncio.to_thread(run)
    assert seen == [[]]
