"""A real dnsmasq on 127.0.0.1 serving test TXT records (SPF, DKIM keys, DMARC policies).

Authoritative only for the zones it is given (``--local``): any other name there is NXDOMAIN,
and nothing is forwarded anywhere (``--no-resolv``)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import dns.exception
import dns.message
import dns.query
import dns.rcode

from tests.integration.infra import _process
from tests.integration.infra._process import InfraError
from tests.integration.infra.ports import free_port

# A DNS character-string holds at most 255 octets (RFC 1035 §3.3); longer TXT data (a DKIM
# key) is split into several, which receivers concatenate (RFC 7208 §3.3, RFC 6376 §3.6.2.2).
_CHUNK = 255


class Dnsmasq:
    """``with Dnsmasq({"example.net": ...}, zones=["example.net"]) as d: d.server``."""

    def __init__(self, txt: dict[str, list[str]], zones: list[str]) -> None:
        self.txt = txt
        self.zones = zones
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None

    @property
    def server(self) -> str:
        """For POSTMESH_DNS_SERVERS."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> Dnsmasq:
        binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        if not Path(binary).exists():
            raise InfraError("dnsmasq is not installed (scripts/ensure-tools.sh installs it)")
        self._tmp = Path(tempfile.mkdtemp(prefix="postmesh-dnsmasq-"))
        self.port = free_port()
        args = [
            binary,
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
        ]
        args += [f"--local=/{zone}/" for zone in self.zones]
        for name, values in self.txt.items():
            for value in values:
                chunks = [value[i : i + _CHUNK] for i in range(0, len(value), _CHUNK)] or [""]
                if any("," in c for c in chunks):
                    raise InfraError("dnsmasq --txt-record cannot hold a comma")
                args.append("--txt-record=" + ",".join([name, *chunks]))
        log = (self._tmp / "dnsmasq.log").open("wb")
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        _process.register(self._proc)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        name = next(iter(self.txt), self.zones[0])
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise InfraError(f"dnsmasq exited: {self.log_tail()}")
            try:
                reply = dns.query.udp(
                    dns.message.make_query(name, "TXT"), "127.0.0.1", timeout=0.5, port=self.port
                )
                if reply.rcode() == dns.rcode.NOERROR:
                    return
            except (dns.exception.Timeout, OSError):
                pass
            time.sleep(0.1)
        raise InfraError(f"dnsmasq did not answer within {timeout:.0f}s: {self.log_tail()}")

    def log_tail(self) -> str:
        return _process.log_tail(self._tmp / "dnsmasq.log") if self._tmp else ""

    def stop(self) -> None:
        if self._proc is not None:
            _process.stop_process(self._proc, grace_s=5)
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
