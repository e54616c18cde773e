"""The queue admin API's bearer check: the admin token only; a domain-admin token is a 403
with its reason, anything else a 401 (docs/adr/0026-admin-token-roles.md)."""

from __future__ import annotations

from typing import Any

import httpx

from postmesh.api.store.v1 import queue_pb2
from postmesh.common.admin_token import new_domain_admin_token
from postmesh.delivery.admin_api import create_admin_app
from postmesh.delivery.queue_admin import QueueAdmin
from postmesh.delivery.trace import TraceIndex

TOKEN = "q" * 32


class EmptyQueue:
    async def List(self, request: queue_pb2.ListQueueRequest, timeout: float) -> Any:
        return queue_pb2.ListQueueResponse()


async def _remove(entries: Any, bounce: bool) -> None:
    raise AssertionError("not reached")


def client() -> httpx.AsyncClient:
    admin = QueueAdmin(
        EmptyQueue(),  # type: ignore[arg-type]
        owner="test",
        lease_seconds=60,
        deadline=5,
        run_now=lambda entries: None,
        remove=_remove,
    )
    app = create_admin_app(admin, TraceIndex(10), TOKEN)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://q")


async def test_admin_token_lists_the_queue() -> None:
    async with client() as c:
        r = await c.get("/api/v1/queue", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    assert r.json() == {"entries": [], "next_page_token": ""}


async def test_domain_admin_tokens_are_403_others_401() -> None:
    _, domain_admin = new_domain_admin_token()
    async with client() as c:
        for path in ("/api/v1/queue", "/api/v1/queue/Q1", "/api/v1/trace/Q1"):
            r = await c.get(path, headers={"Authorization": f"Bearer {domain_admin}"})
            assert r.status_code == 403, path
            assert "admin role" in r.json()["detail"]
            for bad in ("", TOKEN[:-1], TOKEN + "x", domain_admin[:-1]):
                r = await c.get(path, headers={"Authorization": f"Bearer {bad}"})
                assert r.status_code == 401, (path, bad)
        r = await c.delete("/api/v1/queue/Q1", headers={"Authorization": f"Bearer {domain_admin}"})
        assert r.status_code == 403
