"""A private PostgreSQL from Debian on 127.0.0.1, as FerretDB's backend (its main, fully
supported handler: filters, sorts and limits pushed down, indexes used).

A cluster of its own in a temp dir (initdb), on a free loopback port, its Unix socket in the same
dir, trust authentication for the local ``postgres`` role: nothing of the machine's own clusters
is touched. PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres``
user that the Debian package creates."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from tests.integration.infra._process import InfraError, LocalServer, log_tail
from tests.integration.infra.ports import free_port

DATABASE = "ferretdb"


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise InfraError("PostgreSQL is not installed (scripts/ensure-tools.sh installs it)")
    return Path(found[-1]).parent  # the newest installed major version


class PostgreSQL(LocalServer):
    def __init__(
        self,
        *,
        fsync: bool = False,
        timeout_s: float = 60.0,
        users: Mapping[str, str] | None = None,
    ) -> None:
        """``fsync=False`` for tests (durability across a machine crash is not under test);
        benchmarks keep PostgreSQL's default (on), as a deployment would. ``users``: login
        roles (name -> password) that own the database and must give their password over TCP
        (scram-sha-256); ``postgres`` stays trusted for the fixtures' own use."""
        self.fsync = fsync
        self.users = dict(users or {})
        self.timeout_s = timeout_s
        self.port = 0
        self._tmp: Path | None = None
        self._bin = Path()

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, user: str) -> str:
        return f"postgres://{user}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def _data(self) -> Path:
        assert self._tmp is not None
        return self._tmp / "data"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=self.timeout_s, check=False,
        )  # fmt: skip

    def _check(self, what: str, done: subprocess.CompletedProcess[str]) -> None:
        if done.returncode != 0:
            log = log_tail(self._tmp / "postgres.log") if self._tmp else ""
            raise InfraError(f"PostgreSQL {what} failed: {done.stderr or done.stdout}\n{log}")

    def start(self) -> PostgreSQL:
        self._bin = _bindir()
        self._tmp = Path(tempfile.mkdtemp(prefix="postmesh-postgres-"))
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            os.chown(self._tmp, pg.pw_uid, pg.pw_gid)
        try:
            self._check(
                "initdb",
                self._run(
                    str(self._bin / "initdb"), "-D", str(self._data), "-A", "trust",
                    "-U", "postgres", "-E", "UTF8", "--no-sync",
                ),
            )  # fmt: skip
            if self.users:
                # First match wins: these lines go before initdb's "trust" ones.
                hba = self._data / "pg_hba.conf"
                lines = "".join(f"host all {u} 127.0.0.1/32 scram-sha-256\n" for u in self.users)
                self._write_as_owner(hba, lines + hba.read_text())
            self.port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self._tmp} "
                f"-c fsync={'on' if self.fsync else 'off'}"
            )
            self._check(
                "start",
                self._run(
                    str(self._bin / "pg_ctl"), "-D", str(self._data), "-l",
                    str(self._tmp / "postgres.log"), "-o", options, "-w", "-t",
                    str(int(self.timeout_s)), "start",
                ),
            )  # fmt: skip
            self._check(
                "createdb",
                self._run(
                    str(self._bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                    "-U", "postgres", DATABASE,
                ),
            )  # fmt: skip
            for user, password in self.users.items():
                self._check(
                    f"creating role {user}",
                    self._psql(
                        f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'; "
                        f'ALTER DATABASE {DATABASE} OWNER TO "{user}";'
                    ),
                )
        except BaseException:
            self.stop()
            raise
        return self

    def _psql(self, sql: str) -> subprocess.CompletedProcess[str]:
        return self._run(
            str(self._bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
            "-d", DATABASE, "-v", "ON_ERROR_STOP=1", "-c", sql,
        )  # fmt: skip

    def psql(self, sql: str) -> str:
        """Run ``sql`` as the superuser; psql's output (InfraError when it fails)."""
        done = self._psql(sql)
        self._check("psql", done)
        return done.stdout

    def _write_as_owner(self, path: Path, text: str) -> None:
        # As root the data dir belongs to postgres; keep the file its own.
        stat = path.stat()
        path.write_text(text)
        os.chown(path, stat.st_uid, stat.st_gid)

    def stop(self) -> None:
        """Stops our own server (pg_ctl reads its postmaster's PID from the data dir)."""
        if self._tmp is None:
            return
        if (self._data / "postmaster.pid").exists():
            self._run(str(self._bin / "pg_ctl"), "-D", str(self._data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp = None
        self.port = 0
