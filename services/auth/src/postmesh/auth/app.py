"""Wires the auth service: repository, gRPC server, admin API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import uvicorn

from postmesh.api.auth.v1 import auth_pb2, auth_pb2_grpc
from postmesh.auth.accounts import Accounts
from postmesh.auth.admin_api import create_admin_app
from postmesh.auth.dkim_keys import DkimKeys
from postmesh.auth.dns_records import DnsPolicy
from postmesh.auth.grpc_api import AuthServicer
from postmesh.auth.lockout import LockoutPolicy, LoginGuard
from postmesh.auth.login_cache import LoginCache
from postmesh.auth.quotas import StoreQuotas
from postmesh.auth.records import RecordRepository
from postmesh.auth.repository import AccountRepository
from postmesh.auth.settings import AuthSettings
from postmesh.common.grpc import GrpcServer
from postmesh.common.grpc_security import GrpcSecurity
from postmesh.common.logging import get_logger, kv
from postmesh.common.mongo import mongo_startup
from postmesh.common.ops import ReadinessCheck
from postmesh.common.service import Service
from postmesh.common.stubs import store_stub

if TYPE_CHECKING:
    from pymongo import AsyncMongoClient

log = get_logger(__name__)


def mongo_client(settings: AuthSettings) -> AsyncMongoClient[dict[str, Any]]:
    from pymongo import AsyncMongoClient

    url, options = settings.mongo_client_args()
    return AsyncMongoClient(url, **options)


def create_repository(settings: AuthSettings) -> AccountRepository:
    if settings.auth_backend == "mongodb":
        from postmesh.auth.repository.mongodb import MongoAccountRepository

        return MongoAccountRepository(
            None, settings.mongodb_database, client=mongo_client(settings)
        )
    from postmesh.auth.repository.sqlite import SqliteAccountRepository

    return SqliteAccountRepository(settings.data_path(settings.auth_sqlite_path))


def create_records(settings: AuthSettings) -> RecordRepository:
    if settings.auth_backend == "mongodb":
        from postmesh.auth.records.mongodb import MongoRecordRepository

        return MongoRecordRepository(None, settings.mongodb_database, client=mongo_client(settings))
    from postmesh.auth.records.sqlite import SqliteRecordRepository

    return SqliteRecordRepository(settings.data_path(settings.auth_sqlite_path))


def lockout_policy(settings: AuthSettings) -> LockoutPolicy:
    return LockoutPolicy(
        account_failures=settings.auth_lockout_account_failures,
        ip_failures=settings.auth_lockout_ip_failures,
        window_seconds=settings.auth_lockout_window_seconds,
        lockout_seconds=settings.auth_lockout_seconds,
        backoff_base_seconds=settings.auth_backoff_base_seconds,
        backoff_max_seconds=settings.auth_backoff_max_seconds,
    )


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside our event loop: the service owns signal handling, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class AuthServiceApp(Service):
    name = "auth"

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.repo = create_repository(settings)
        self.records = create_records(settings)
        self.accounts = Accounts(
            self.repo,
            self.records,
            LoginGuard(self.records, lockout_policy(settings)),
            settings.auth_scram_iterations,
            LoginCache(settings.auth_login_cache_seconds, settings.auth_login_cache_entries),
            DkimKeys(
                self.repo,
                ed25519=settings.dkim_ed25519,
                rotation_activation_seconds=settings.dkim_rotation_activation_seconds,
                retired_grace_seconds=settings.dkim_retired_grace_seconds,
            ),
            recipient_delimiter=settings.auth_recipient_delimiter,
            resolution_cache_seconds=settings.auth_resolution_cache_seconds,
            postmaster=settings.auth_postmaster,
        )
        if not settings.auth_postmaster:
            log.warning(
                "POSTMESH_AUTH_POSTMASTER is not set: mail for postmaster@ a hosted domain is "
                "refused unless that domain has a postmaster user or alias (RFC 5321 §4.5.1)"
            )
        security = GrpcSecurity.from_settings(settings)
        # Only for the admin API's quotas (store.SetQuota is auth's to call).
        self.quotas = StoreQuotas(
            store_stub(settings.store_address, security), settings.grpc_deadline_seconds
        )
        self.grpc = GrpcServer(settings.auth_listen, security)
        self.grpc.add(auth_pb2_grpc.add_AuthServiceServicer_to_server, AuthServicer(self.accounts))
        self._http: _EmbeddedUvicorn | None = None
        self._http_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        async with mongo_startup(self.settings):
            await self.repo.open()
            await self.records.open()
        await self.accounts.dkim.ensure_keys()
        await self.grpc.start([auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name])
        app = create_admin_app(
            self.accounts,
            self.settings.admin_token_value(),
            DnsPolicy.from_settings(self.settings),
            self.quotas,
        )
        config = uvicorn.Config(
            app,
            host=self.settings.admin_host,
            port=self.settings.admin_port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        self._http = _EmbeddedUvicorn(config)
        self._http_task = asyncio.create_task(self._http.serve())
        while not self._http.started:
            if self._http_task.done():
                self._http_task.result()  # surfaces a bind error
                raise RuntimeError("admin API stopped during start-up")
            await asyncio.sleep(0.02)
        log.info(
            "admin api listening",
            extra=kv(host=self.settings.admin_host, port=self.settings.admin_port),
        )

    async def stop(self) -> None:
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            await self._http_task
        await self.grpc.stop()
        await self.records.close()
        await self.repo.close()

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        return {"repository": self.repo.ping}
