"""A real dnsmasq on a free loopback port serving test zones (MX, null MX, A, TXT), so the
delivery service's MX routing runs against a real DNS server (POSTMESH_DNS_SERVERS)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from tests.integration.infra import _process
from tests.integration.infra._process import InfraError


@dataclass
class Zone:
    """Records under ``.test``; every other name under ``.test`` is NXDOMAIN (--local)."""

    # (domain, exchange, preference); exchange "." is a null MX (RFC 7505).
    mx: list[tuple[str, str, int]] = field(default_factory=list)
    # (name, IPv4 address)
    a: list[tuple[str, str]] = field(default_factory=list)
    # (name, text)
    txt: list[tuple[str, str]] = field(default_factory=list)


def free_udp_tcp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (dnsmasq binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise InfraError("no free UDP+TCP port on 127.0.0.1")


class Dnsmasq:
    """dnsmasq as a child process (foreground, no upstream, no /etc/hosts, no config file).
    Started as root it drops to ``nobody`` itself."""

    def __init__(self, zone: Zone, *, startup_timeout_s: float = 15.0) -> None:
        self.zone = zone
        self._startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self.port = 0

    @property
    def servers(self) -> str:
        """The POSTMESH_DNS_SERVERS value for this server."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self._tmp is not None
        return self._tmp / "dnsmasq.log"

    def args(self) -> list[str]:
        assert self._tmp is not None
        args = [
            "--keep-in-foreground",
            f"--port={self.port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            f"--pid-file={self._tmp / 'dnsmasq.pid'}",
            "--log-facility=-",
            "--log-queries",
            # Answer for .test from the records below only: unknown names are NXDOMAIN.
            "--local=/test/",
        ]
        args += [f"--mx-host={d},{x},{p}" for d, x, p in self.zone.mx]
        args += [f"--host-record={n},{ip}" for n, ip in self.zone.a]
        args += [f'--txt-record={n},"{t}"' for n, t in self.zone.txt]
        return args

    def start(self) -> Dnsmasq:
        binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        self._tmp = Path(tempfile.mkdtemp(prefix="postmesh-dnsmasq-"))
        self._tmp.chmod(0o755)  # the pid file is written before privileges are dropped
        self.port = free_udp_tcp_port()
        try:
            with self.log_path.open("wb") as out:
                self._proc = subprocess.Popen(
                    [binary, *self.args()],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            _process.register(self._proc)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        import dns.exception
        import dns.nameserver
        import dns.resolver

        assert self._proc is not None
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", self.port)]
        resolver.lifetime = 1.0
        deadline = time.monotonic() + self._startup_timeout_s
        while True:
            if self._proc.poll() is not None:
                raise InfraError(
                    f"dnsmasq exited with {self._proc.returncode}:\n"
                    + _process.log_tail(self.log_path)
                )
            try:
                resolver.resolve("probe.test", "A")
            except dns.resolver.NXDOMAIN:
                return  # it answers
            except dns.exception.DNSException:
                pass
            else:
                return
            if time.monotonic() > deadline:
                raise InfraError("dnsmasq did not answer:\n" + _process.log_tail(self.log_path))
            time.sleep(0.1)

    def stop(self) -> None:
        if self._proc is not None:
            _process.stop_process(self._proc, 5)
            self._proc = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> Dnsmasq:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
