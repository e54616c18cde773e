"""A real dnsmasq on a free loopback port serving test zones (MX, null MX, A, TXT for SPF, DKIM
keys, DMARC policies), so delivery's MX routing and smtp-edge's mail authentication run against
a real DNS server (POSTMESH_DNS_SERVERS).

Authoritative only for the zones it is given (``--local``): any other name there is NXDOMAIN,
and nothing is forwarded anywhere (``--no-resolv``)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from tests.integration.infra import _process
from tests.integration.infra._process import InfraError, LocalServer
from tests.integration.infra.ports import free_port_for

# A DNS character-string holds at most 255 octets (RFC 1035 §3.3); longer TXT data (a DKIM
# key) is split into several, which receivers concatenate (RFC 7208 §3.3, RFC 6376 §3.6.2.2).
_CHUNK = 255


@dataclass
class Zone:
    """The records to serve; every other name under ``zones`` is NXDOMAIN."""

    # (domain, exchange, preference); exchange "." is a null MX (RFC 7505).
    mx: list[tuple[str, str, int]] = field(default_factory=list)
    # (name, IPv4 address)
    a: list[tuple[str, str]] = field(default_factory=list)
    # (name, text); a name may have several.
    txt: list[tuple[str, str]] = field(default_factory=list)
    # The domains this server is authoritative for.
    zones: list[str] = field(default_factory=lambda: ["test"])


def free_udp_tcp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (dnsmasq binds both)."""
    return free_port_for(("127.0.0.1",), udp=True)


def txt_line(name: str, text: str) -> str:
    """A ``txt-record`` config line for one TXT record, split into character-strings of at most
    255 octets. Quoted, so a comma inside a record stays in its string: dnsmasq honours quotes
    in a config file, not on its command line."""
    chunks = [text[i : i + _CHUNK] for i in range(0, len(text), _CHUNK)] or [""]
    if any('"' in c or "\\" in c for c in chunks):
        raise InfraError("test TXT records cannot hold a double quote or a backslash")
    return "txt-record=" + ",".join([name, *(f'"{c}"' for c in chunks)])


class Dnsmasq(LocalServer):
    """dnsmasq as a child process (foreground, no upstream, no /etc/hosts, no config file).
    Started as root it drops to ``nobody`` itself."""

    def __init__(self, zone: Zone, *, startup_timeout_s: float = 15.0, ttl: int = 0) -> None:
        """``ttl``: the TTL of every answer (``--local-ttl``); dnsmasq's default 0 keeps
        resolvers from caching, a real zone's (e.g. 300) lets them."""
        self.zone = zone
        self.ttl = ttl
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
            f"--local-ttl={self.ttl}",
        ]
        args += [f"--local=/{z}/" for z in self.zone.zones]
        args += [f"--mx-host={d},{x},{p}" for d, x, p in self.zone.mx]
        args += [f"--host-record={n},{ip}" for n, ip in self.zone.a]
        records = self._tmp / "records.conf"
        records.write_text("".join(txt_line(n, t) + "\n" for n, t in self.zone.txt))
        records.chmod(0o644)
        args.append(f"--conf-file={records}")
        return args

    def start(self) -> Dnsmasq:
        binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        if not Path(binary).exists():
            raise InfraError("dnsmasq is not installed (scripts/ensure-tools.sh installs it)")
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
        assert self._proc is not None
        name = f"probe.{self.zone.zones[0]}"

        def probe() -> str | None:
            reply = dns.query.udp(
                dns.message.make_query(name, "A"), "127.0.0.1", timeout=0.5, port=self.port
            )
            if reply.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                return None  # it answers
            return f"answered {dns.rcode.to_text(reply.rcode())}"

        _process.wait_ready(
            self._proc, "dnsmasq", self._startup_timeout_s, self.log_path, probe, 0.1
        )

    def log_tail(self) -> str:
        return _process.log_tail(self.log_path) if self._tmp else ""

    def stop(self) -> None:
        if self._proc is not None:
            _process.stop_process(self._proc, 5)
            self._proc = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
