"""The whole system on one machine: six service processes, as ``make run`` and the integration
tests start it. Each service is a separate ``python -m postmesh.<service>`` process configured
only through POSTMESH_* environment variables, exactly as in a container."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from postmesh.common.dev_pki import ensure_dev_pki
from postmesh.common.grpc_security import GrpcSecurity
from postmesh.common.tls import ensure_dev_certificate

# Start order: what others call comes first.
SERVICES = ("store", "auth", "delivery", "smtp-edge", "imap-gw", "pop3-gw")


@dataclass
class StackPorts:
    smtp_mx: int = 2525
    smtp_submission: int = 2587
    smtp_submissions: int = 2465
    imap: int = 1143
    imaps: int = 1993
    pop3: int = 1110
    pop3s: int = 1995
    admin: int = 8080
    queue_admin: int = 8081
    store_grpc: int = 50061
    auth_grpc: int = 50062
    ops: dict[str, int] = field(
        default_factory=lambda: {
            "smtp-edge": 9101,
            "imap-gw": 9102,
            "pop3-gw": 9103,
            "delivery": 9104,
            "store": 9105,
            "auth": 9106,
        }
    )


# A Unix socket's path must fit sockaddr_un's sun_path (108 bytes on Linux, with its NUL).
_MAX_SOCKET_PATH = 107


def grpc_targets(ports: StackPorts, data_dir: Path, local: bool) -> dict[str, str]:
    """Where store and auth serve gRPC: Unix sockets in ``<data_dir>/grpc`` when ``local``
    (one machine, one user: ADR 0073) and the path fits, else loopback TCP with mutual TLS."""
    if local:
        sockets = {svc: data_dir / "grpc" / f"{svc}.sock" for svc in ("store", "auth")}
        if all(len(str(p)) <= _MAX_SOCKET_PATH for p in sockets.values()):
            return {svc: f"unix:{p}" for svc, p in sockets.items()}
    return {"store": f"127.0.0.1:{ports.store_grpc}", "auth": f"127.0.0.1:{ports.auth_grpc}"}


def service_env(
    ports: StackPorts, data_dir: Path, service: str, local_grpc: bool = True
) -> dict[str, str]:
    """The stack's settings for one service; variables already in the environment win."""
    grpc = grpc_targets(ports, data_dir, local_grpc)
    env = {
        "POSTMESH_DATA_DIR": str(data_dir),
        "POSTMESH_OPS_PORT": str(ports.ops[service]),
        "POSTMESH_STORE_LISTEN": grpc["store"],
        "POSTMESH_STORE_ADDRESS": grpc["store"],
        "POSTMESH_AUTH_LISTEN": grpc["auth"],
        "POSTMESH_AUTH_ADDRESS": grpc["auth"],
        "POSTMESH_ADMIN_PORT": str(ports.admin),
        "POSTMESH_QUEUE_ADMIN_PORT": str(ports.queue_admin),
        "POSTMESH_SMTP_MX_PORT": str(ports.smtp_mx),
        "POSTMESH_SMTP_SUBMISSION_PORT": str(ports.smtp_submission),
        "POSTMESH_SMTP_SUBMISSIONS_PORT": str(ports.smtp_submissions),
        "POSTMESH_IMAP_PORT": str(ports.imap),
        "POSTMESH_IMAPS_PORT": str(ports.imaps),
        "POSTMESH_POP3_PORT": str(ports.pop3),
        "POSTMESH_POP3S_PORT": str(ports.pop3s),
        # TCP hops (a replica a test adds on a port, or the whole stack when not local) use
        # mutual TLS with a throwaway CA (ADR 10), as in production.
        **ensure_dev_pki(data_dir / "grpc-pki", SERVICES)[service].env(),
    }
    return env


class StackError(RuntimeError):
    pass


@dataclass(frozen=True)
class Replica:
    """One more process of ``service`` for :meth:`Stack.replicas`: its process name (and log
    ``<name>.log``), its ops port, and the settings that differ (its listening ports)."""

    service: str
    name: str
    ops_port: int
    overrides: Mapping[str, str] = field(default_factory=dict)


class Stack:
    def __init__(
        self,
        data_dir: Path,
        ports: StackPorts | None = None,
        extra_env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        local_grpc: bool = True,
    ) -> None:
        """``local_grpc``: store and auth on Unix sockets, as ``make run`` has them; False for
        loopback TCP with mutual TLS, as between the pods of a cluster."""
        self.data_dir = data_dir.resolve()
        self.ports = ports or StackPorts()
        self.extra_env = dict(extra_env or {})
        self.local_grpc = local_grpc
        self.log_dir = log_dir or self.data_dir / "logs"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def env_for(self, service: str) -> dict[str, str]:
        env = dict(os.environ)
        own = service_env(self.ports, self.data_dir, service, self.local_grpc)
        for k, v in {**own, **self.extra_env}.items():
            env.setdefault(k, v)
        return env

    def grpc_target(self, server: str) -> str:
        """The gRPC target of ``server`` ("store" or "auth") in this stack."""
        return grpc_targets(self.ports, self.data_dir, self.local_grpc)[server]

    def grpc_security(self, service: str) -> GrpcSecurity:
        """The credentials of ``service``, for a test or tool that calls store or auth as it."""
        return ensure_dev_pki(self.data_dir / "grpc-pki", SERVICES)[service].security()

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # Made once here, so the services never race to create it.
        ensure_dev_certificate(self.data_dir)
        try:
            for svc in SERVICES:
                self._spawn(svc)
                self._wait_ready(svc, timeout)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, service: str, name: str = "", env: Mapping[str, str] | None = None) -> None:
        module = "postmesh." + service.replace("-", "_")
        name = name or service
        log = (self.log_dir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", module],
            env=dict(env) if env is not None else self.env_for(service),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()

    @contextmanager
    def replica(
        self, service: str, name: str, ops_port: int, overrides: Mapping[str, str]
    ) -> Iterator[subprocess.Popen[bytes]]:
        """One more process of ``service``, as another pod of the same Deployment: the stack's
        settings with ``overrides`` (its own listening ports), its log in ``<name>.log``.
        Stopped on leaving the block (if it still runs)."""
        with self.replicas([Replica(service, name, ops_port, overrides)]) as procs:
            yield procs[name]

    @contextmanager
    def replicas(self, wanted: Sequence[Replica]) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
        """Several more processes at once (started together, then each waited for until
        ready: their start-ups overlap), by name; all stopped on leaving the block."""
        names: list[str] = []
        try:
            for r in wanted:
                env = {
                    **self.env_for(r.service),
                    **r.overrides,
                    "POSTMESH_OPS_PORT": str(r.ops_port),
                }
                self._spawn(r.service, r.name, env)
                names.append(r.name)
            for r in wanted:
                self._wait_ready(r.name, 60.0, r.ops_port)
            yield {name: self.procs[name] for name in names}
        finally:
            procs = [self.procs.pop(name) for name in names]
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def log_tail(self, service: str, lines: int = 30) -> str:
        path = self.log_dir / f"{service}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _wait_ready(self, service: str, timeout: float, ops_port: int | None = None) -> None:
        url = f"http://127.0.0.1:{ops_port or self.ports.ops[service]}/readyz"
        deadline = time.monotonic() + timeout
        proc = self.procs[service]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(
                    f"{service} exited with status {proc.returncode} during start-up:\n"
                    + self.log_tail(service)
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    pid = resp.headers.get("X-Postmesh-Pid")
                    if pid is not None and pid != str(proc.pid):
                        # Another process holds the port (ours will fail to bind it): not
                        # ours, and not ready, whatever that one says.
                        raise StackError(
                            f"{service}'s ops port {url} is served by process {pid}, not "
                            f"{proc.pid}:\n" + self.log_tail(service)
                        )
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise StackError(f"{service} not ready after {timeout:.0f}s:\n" + self.log_tail(service))

    def stop(self, timeout: float = 15.0) -> None:
        for svc in reversed(list(self.procs)):
            proc = self.procs[svc]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def admin_token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()

    def admin_post(self, path: str, body: Mapping[str, str]) -> int:
        """POST to the admin API; returns the HTTP status (409 = already there)."""
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.ports.admin}{path}",
            data=json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.admin_token()}",
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as e:
            if e.code == 409:
                return 409
            raise StackError(f"admin API {path} answered {e.code}: {e.read().decode()}") from e

    def ensure_user(self, address: str, password: str) -> None:
        self.admin_post("/api/v1/domains", {"name": address.rpartition("@")[2]})
        self.admin_post("/api/v1/users", {"address": address, "password": password})
