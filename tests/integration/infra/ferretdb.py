"""A real FerretDB 1.24 (MongoDB wire protocol) on 127.0.0.1 for tests, on PostgreSQL (its main
handler, which pushes filters, sorts and limits down and uses the store's indexes) or, on
request, on SQLite (which pushes only ``_id`` filters down and scans collections)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.integration.infra import _process
from tests.integration.infra._process import InfraError, LocalServer
from tests.integration.infra.ports import free_port, port_open
from tests.integration.infra.postgres import PostgreSQL

DEFAULT_VERSION = os.environ.get("FERRETDB_VERSION", "v1.24.2")
# "pg" (a private PostgreSQL of its own, started and stopped with it) or "sqlite".
DEFAULT_HANDLER = os.environ.get("POSTMESH_TEST_FERRETDB_HANDLER", "pg")


class FerretDB(LocalServer):
    """FerretDB as a child process on its own PostgreSQL (or SQLite); a (sync or async) context
    manager.

    >>> with FerretDB() as db:
    ...     client = AsyncMongoClient(db.url)
    """

    def __init__(
        self,
        binary: Path | str | None = None,
        *,
        version: str = DEFAULT_VERSION,
        handler: str = DEFAULT_HANDLER,
        fsync: bool = False,
        log_level: str = "warn",
        startup_timeout_s: float = 60.0,
        stop_timeout_s: float = 15.0,
        tls_cert_file: Path | None = None,
        tls_key_file: Path | None = None,
        users: Mapping[str, str] | None = None,
    ) -> None:
        """``tls_cert_file``/``tls_key_file``: a second, TLS-only listener (``tls_port``).
        ``users`` (pg handler only): PostgreSQL roles that must log in with their password;
        FerretDB 1.x passes a client's PLAIN credentials on to PostgreSQL, which checks them."""
        self._binary = Path(binary) if binary is not None else None
        self.version = version
        if handler not in ("pg", "sqlite"):
            raise InfraError(f"unknown FerretDB handler {handler!r} (pg or sqlite)")
        self.handler = handler
        self._users = dict(users or {})
        if users and handler != "pg":
            raise InfraError("FerretDB users need the pg handler (PostgreSQL checks them)")
        self._postgres = PostgreSQL(fsync=fsync, users=users) if handler == "pg" else None
        self._tls = (tls_cert_file, tls_key_file) if tls_cert_file and tls_key_file else None
        self.tls_port = 0
        self._log_level = log_level
        self._startup_timeout_s = startup_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self.port = 0

    @property
    def url(self) -> str:
        if not self.port:
            raise InfraError("FerretDB is not started")
        return f"mongodb://127.0.0.1:{self.port}/"

    def tls_url(self, query: str = "") -> str:
        """The TLS listener's URL (no credentials: give them apart, as a deployment would)."""
        if not self.tls_port:
            raise InfraError("FerretDB has no TLS listener (or is not started)")
        return f"mongodb://127.0.0.1:{self.tls_port}/" + (f"?{query}" if query else "")

    @property
    def log_path(self) -> Path:
        if self._tmp is None:
            raise InfraError("FerretDB is not started")
        return self._tmp / "ferretdb.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def sql(self, statements: str) -> str:
        """Run SQL on the PostgreSQL under FerretDB (pg handler) as its superuser, as an
        operator's psql would; psql's output. Each FerretDB database is a schema there."""
        if self._postgres is None or not self.port:
            raise InfraError("FerretDB is not started on the pg handler")
        return self._postgres.psql(statements)

    def start(self) -> FerretDB:
        if self._proc is not None:
            raise InfraError("FerretDB already started")
        binary = self._binary or _process.run_fetch_script("fetch-ferretdb.sh", self.version)
        if not os.access(binary, os.X_OK):
            raise InfraError(f"FerretDB binary {binary} is missing or not executable")
        self._tmp = Path(tempfile.mkdtemp(prefix="postmesh-ferretdb-"))
        try:
            if self._postgres is not None:
                self._postgres.start()
            self._launch(binary)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the FerretDB we started (SIGTERM, then SIGKILL) and delete its temp dir."""
        if self._proc is not None:
            _process.stop_process(self._proc, self._stop_timeout_s)
            self._proc = None
        if self._postgres is not None:
            self._postgres.stop()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self.port = self.tls_port = 0

    def _launch(self, binary: Path) -> None:
        assert self._tmp is not None
        data = self._tmp / "data"
        state = self._tmp / "state"
        data.mkdir()
        state.mkdir()
        self.port = free_port()
        if self._postgres is not None:
            # With users, the default connection is the first of them with no password, which
            # PostgreSQL refuses: an anonymous client gets nothing, as in a deployment.
            pg_url = self._postgres.url_for(next(iter(self._users), "postgres"))
            backend = ["--handler=pg", f"--postgresql-url={pg_url}"]
        else:
            # A directory URI: the trailing slash matters.
            backend = ["--handler=sqlite", f"--sqlite-url=file:{data}/"]
        cmd = [
            str(binary),
            *backend,
            f"--listen-addr=127.0.0.1:{self.port}",
            # Never report to the vendor's telemetry server: traffic stays on loopback.
            "--telemetry=disable",
            # The default debug listener (127.0.0.1:8088) would collide between instances.
            "--debug-addr=-",
            f"--state-dir={state}",
            f"--log-level={self._log_level}",
        ]
        if self._tls is not None:
            self.tls_port = free_port()
            while self.tls_port == self.port:
                self.tls_port = free_port()
            cmd += [
                f"--listen-tls=127.0.0.1:{self.tls_port}",
                f"--listen-tls-cert-file={self._tls[0]}",
                f"--listen-tls-key-file={self._tls[1]}",
            ]
        # DO_NOT_TRACK is FerretDB's second telemetry switch; clear FERRETDB_* settings of
        # the caller's environment so only the flags above decide.
        env = {k: v for k, v in os.environ.items() if not k.startswith("FERRETDB_")}
        env["DO_NOT_TRACK"] = "1"
        with self.log_path.open("wb") as out:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self._tmp,
                env=env,
                start_new_session=True,
            )
        _process.register(self._proc)

    def _credentials(self) -> dict[str, Any]:
        """PyMongo arguments to log in as the first user (FerretDB 1.x: PLAIN only)."""
        if not self._users:
            return {}
        user, password = next(iter(self._users.items()))
        return {"username": user, "password": password, "authMechanism": "PLAIN"}

    def _wait_ready(self) -> None:
        from pymongo import MongoClient

        assert self._proc is not None

        def probe() -> str | None:
            if not port_open("127.0.0.1", self.port):
                return f"nothing listens on {self.url} yet"
            client: MongoClient[dict[str, Any]] = MongoClient(
                self.url,
                serverSelectionTimeoutMS=2000,
                connectTimeoutMS=2000,
                directConnection=True,
                **self._credentials(),
            )
            with client:
                client.admin.command("ping")
                if self._users:  # a command that reaches PostgreSQL as the user
                    client["ferretdb_ready"].list_collection_names()
            return None

        _process.wait_ready(
            self._proc, "FerretDB", self._startup_timeout_s, self.log_path, probe, 0.1
        )
