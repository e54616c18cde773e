"""A DNSSEC-validating DNS on loopback for the DANE tests (RFC 7672): test zones signed here,
served by a real authoritative NSD and resolved by a real validating Unbound, whose answers carry
the AD bit for signed data (RFC 4035 §3.2.3) — the POSTMESH_DNS_SERVERS a DANE test gives
delivery is that Unbound.

Each signed zone gets an ECDSAP256SHA256 key of its own (RFC 6605), made for this run, and is
signed by dnspython with NSEC, so NODATA and NXDOMAIN answers are provably secure too. Unbound
knows the key's DS as the zone's trust anchor; it has no root key and no route to the internet.

- ``SignedZone(signed=True)``: answers (NOERROR, NODATA, NXDOMAIN) come with AD.
- ``signed=False``: the zone is served unsigned and declared insecure (``domain-insecure``):
  answers come without AD.
- ``bogus=True``: signed, but Unbound's trust anchor is the DS of another key, so the chain of
  trust breaks at the zone's own DNSKEY: every name in it is SERVFAIL (to a query with EDNS,
  with Extended DNS Error 6 "DNSSEC Bogus" and Unbound's reason, RFC 8914); a query with the
  CD bit (checking disabled) still gets the data.

Names outside the zones never leave the machine, and are answered at once: REFUSED, except
where Unbound's built-in local zones answer (RFC 6761/7686 names such as ``other.test``,
``x.invalid``, ``x.onion``: NXDOMAIN without AD; ``localhost``: 127.0.0.1). Every cache TTL is
0 (each query is resolved and validated afresh), so answers carry TTL 0 as dnsmasq's do.

Both servers run as children in a temp dir, in the foreground, as the current user, with no
system config file, no control socket, no syslog, and nothing on port 53."""

from __future__ import annotations

import datetime
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.zone
from cryptography.hazmat.primitives.asymmetric import ec
from dns.dnssectypes import Algorithm
from dns.rdtypes.ANY.DNSKEY import DNSKEY
from dns.rdtypes.dnskeybase import Flag

from tests.integration.infra import _process
from tests.integration.infra._process import InfraError, LocalServer
from tests.integration.infra.dnsmasq import free_udp_tcp_port

# The TTL of every record NSD serves (and the SOA minimum, the negative TTL); Unbound caps what
# it caches and hands out at 0 anyway.
_TTL = 60
# Signature validity: from an hour ago (clock skew) for a week (a long test session).
_SIG_BACKDATE = datetime.timedelta(hours=1)
_SIG_LIFETIME_S = 7 * 24 * 3600
_PROBE_TIMEOUT_S = 2.0


@dataclass
class SignedZone:
    """One zone: its records plus a SOA, NS ``ns.<origin>.`` and ``ns.<origin>. A 127.0.0.1``
    (each added unless ``records`` has that name and type already).

    Names are absolute, with or without the final dot: owner names, and names inside rdata
    ("10 mx.dane.test" is mx.dane.test., not mx.dane.test.dane.test.). Every owner name must be
    the origin or below it; no delegations (NS below the apex), no zone inside another."""

    origin: str  # e.g. "dane.test"
    # (owner name, type, rdata text), e.g. ("mx.dane.test", "A", "127.0.0.5"),
    # ("dane.test", "MX", "10 mx.dane.test."), ("_25._tcp.mx.dane.test", "TLSA", "3 1 1 <hex>")
    records: list[tuple[str, str, str]]
    # False: served unsigned and declared insecure to the resolver (answers without AD).
    signed: bool = True
    # True: signed, but with signatures that do not validate against the trust anchor given to
    # the resolver (answers are SERVFAIL).
    bogus: bool = False

    def __post_init__(self) -> None:
        if self.bogus and not self.signed:
            raise ValueError(f"zone {self.origin}: a bogus zone is a signed one (signed=True)")

    @property
    def name(self) -> dns.name.Name:
        return dns.name.from_text(self.origin)


def _new_key() -> tuple[ec.EllipticCurvePrivateKey, DNSKEY]:
    """A fresh ECDSAP256SHA256 key and its DNSKEY (flags 257: a zone key with the SEP bit, one
    key signing everything)."""
    key = ec.generate_private_key(ec.SECP256R1())
    dnskey = dns.dnssec.make_dnskey(
        key.public_key(),
        Algorithm.ECDSAP256SHA256,
        flags=Flag.ZONE | Flag.SEP,
    )
    return key, dnskey


def build_zone(spec: SignedZone) -> tuple[dns.zone.Zone, str | None]:
    """The zone (signed unless ``spec.signed`` is False) and the trust anchor Unbound gets for
    it (a DS record in zone-file syntax; None for an unsigned zone). A bogus zone's anchor is
    the DS of a key that signs nothing."""
    origin = spec.name
    zone = dns.zone.Zone(origin, relativize=False)
    given: set[tuple[dns.name.Name, dns.rdatatype.RdataType]] = set()
    with zone.writer() as txn:
        for owner, rtype, text in spec.records:
            try:
                name = dns.name.from_text(owner)
                rdata = dns.rdata.from_text(
                    dns.rdataclass.IN, rtype, text, origin=dns.name.root, relativize=False
                )
            except (dns.exception.DNSException, ValueError) as exc:
                raise InfraError(
                    f"zone {spec.origin}: bad record {(owner, rtype, text)}: {exc}"
                ) from exc
            if not name.is_subdomain(origin):
                raise InfraError(f"zone {spec.origin}: {owner} is outside the zone")
            if rdata.rdtype in (dns.rdatatype.NS, dns.rdatatype.DS) and name != origin:
                raise InfraError(f"zone {spec.origin}: no delegations ({owner} {rtype})")
            given.add((name, rdata.rdtype))
            txn.add(name, _TTL, rdata)
        ns = dns.name.from_text("ns", origin)
        defaults = [
            (origin, "SOA", f"{ns} hostmaster.{origin} 1 3600 600 86400 {_TTL}"),
            (origin, "NS", f"{ns}"),
            (ns, "A", "127.0.0.1"),
        ]
        for name, rtype, text in defaults:
            rdata = dns.rdata.from_text(dns.rdataclass.IN, rtype, text)
            if (name, rdata.rdtype) not in given:
                txn.add(name, _TTL, rdata)
    if not spec.signed:
        return zone, None
    key, dnskey = _new_key()
    inception = datetime.datetime.now(datetime.UTC) - _SIG_BACKDATE
    dns.dnssec.sign_zone(zone, keys=[(key, dnskey)], inception=inception, lifetime=_SIG_LIFETIME_S)
    anchor_key = _new_key()[1] if spec.bogus else dnskey
    ds = dns.dnssec.make_ds(origin, anchor_key, "SHA256")
    return zone, f"{origin.to_text()} DS {ds.to_text()}"


def _check_zones(zones: list[SignedZone]) -> None:
    if not zones:
        raise InfraError("DnssecResolver needs at least one zone")
    names = [z.name for z in zones]
    for i, a in enumerate(names):
        if a == dns.name.root:
            raise InfraError("the root cannot be a test zone")
        for b in names[i + 1 :]:
            if a.is_subdomain(b) or b.is_subdomain(a):
                raise InfraError(f"test zones must not overlap or nest: {a} and {b}")


def nsd_conf(tmp: Path, port: int, zones: list[SignedZone]) -> str:
    """NSD: 127.0.0.1:<port> only; every path in ``tmp`` (its defaults are in /etc/nsd and
    /var/lib/nsd); no database, no control socket, no rate limiting (Debian's NSD has RRL on at
    200 qps per source, and the resolver is one source)."""
    lines = [
        "server:",
        "    ip-address: 127.0.0.1",
        f"    port: {port}",
        "    do-ip6: no",
        "    server-count: 1",
        '    username: ""',
        '    chroot: ""',
        f'    zonesdir: "{tmp}"',
        '    database: ""',
        f'    zonelistfile: "{tmp}/zone.list"',
        f'    xfrdfile: "{tmp}/xfrd.state"',
        f'    xfrdir: "{tmp}"',
        f'    pidfile: "{tmp}/nsd.pid"',
        f'    logfile: "{tmp}/nsd.log"',
        f'    cookie-secret-file: "{tmp}/nsd_cookiesecrets.txt"',
        "    verbosity: 1",
        "    hide-version: yes",
        "    hide-identity: yes",
        "    rrl-ratelimit: 0",
        "    rrl-whitelist-ratelimit: 0",
        "remote-control:",
        "    control-enable: no",
    ]
    for z in zones:
        lines += ["zone:", f'    name: "{z.name}"', f'    zonefile: "{z.name}zone"']
    return "\n".join(lines) + "\n"


def unbound_conf(
    tmp: Path, port: int, nsd_port: int, zones: list[SignedZone], anchors: dict[str, str]
) -> str:
    """Unbound: a validating resolver on 127.0.0.1:<port> whose only upstream is NSD."""
    lines = [
        "server:",
        "    interface: 127.0.0.1",
        f"    port: {port}",
        "    do-ip4: yes",
        "    do-ip6: no",
        "    outgoing-interface: 127.0.0.1",
        "    access-control: 127.0.0.0/8 allow",
        "    num-threads: 1",
        '    username: ""',
        '    chroot: ""',
        f'    directory: "{tmp}"',
        f'    pidfile: "{tmp}/unbound.pid"',
        "    use-syslog: no",
        '    logfile: ""',  # stderr, i.e. unbound.log
        "    log-time-ascii: yes",
        "    verbosity: 1",
        "    val-log-level: 2",  # why an answer is bogus
        "    ede: yes",
        '    module-config: "validator iterator"',
        "    val-permissive-mode: no",
        "    do-not-query-localhost: no",  # NSD is on 127.0.0.1
        # Each query is resolved and validated afresh; nothing stale between tests.
        "    cache-max-ttl: 0",
        "    cache-max-negative-ttl: 0",
        "    val-bogus-ttl: 0",
        # No root trust anchor, no root key signalling, nothing that would look for the root.
        "    trust-anchor-signaling: no",
        "    root-key-sentinel: no",
        # Anything outside the test zones is refused at once. The more specific transparent
        # zones let the test zones through, also past Unbound's built-in "test." (NXDOMAIN).
        '    local-zone: "." refuse',
    ]
    for z in zones:
        lines.append(f'    local-zone: "{z.name}" transparent')
        if z.signed:
            lines.append(f'    trust-anchor: "{anchors[z.origin]}"')
        else:
            lines.append(f'    domain-insecure: "{z.name}"')
    # Every stub is NSD; the root's too, so that no query of Unbound's own (priming, a name
    # outside the zones) can go to the root servers. NSD refuses names it does not serve.
    for name in [*(str(z.name) for z in zones), "."]:
        lines += ["stub-zone:", f'    name: "{name}"', f"    stub-addr: 127.0.0.1@{nsd_port}"]
    lines += ["remote-control:", "    control-enable: no"]
    return "\n".join(lines) + "\n"


def _binary(name: str) -> str:
    path = shutil.which(name) or f"/usr/sbin/{name}"
    if not Path(path).exists():
        raise InfraError(f"{name} is not installed (scripts/ensure-tools.sh installs it)")
    return path


def _stop_nsd(proc: subprocess.Popen[bytes]) -> None:
    """The process we start becomes NSD's xfrd, which forks NSD's main process, which forks
    the server: SIGTERM to ours ends all three. Should it not, SIGKILL its process group (its
    own session; the group id is still ours while we have not reaped the leader)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    _process.stop_process(proc, 5)  # reaps it, and forgets it for the last-resort cleanup


class DnssecResolver(LocalServer):
    """NSD serving ``zones`` and Unbound validating them, both child processes; ``servers`` is
    Unbound's address."""

    def __init__(self, zones: list[SignedZone], *, startup_timeout_s: float = 15.0) -> None:
        _check_zones(zones)
        self.zones = zones
        self._startup_timeout_s = startup_timeout_s
        self._nsd: subprocess.Popen[bytes] | None = None
        self._unbound: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self.port = 0  # Unbound's
        self.nsd_port = 0

    @property
    def servers(self) -> str:
        """The POSTMESH_DNS_SERVERS value: the validating resolver."""
        return f"127.0.0.1:{self.port}"

    def _path(self, name: str) -> Path:
        assert self._tmp is not None
        return self._tmp / name

    def start(self) -> DnssecResolver:
        nsd, unbound = _binary("nsd"), _binary("unbound")
        self._tmp = Path(tempfile.mkdtemp(prefix="postmesh-dnssec-"))
        try:
            anchors: dict[str, str] = {}
            for spec in self.zones:
                zone, anchor = build_zone(spec)
                zone.to_file(str(self._path(f"{spec.name}zone")), relativize=False)
                if anchor is not None:
                    anchors[spec.origin] = anchor
            self.nsd_port = free_udp_tcp_port()
            self.port = free_udp_tcp_port()
            nsd_cfg = self._path("nsd.conf")
            nsd_cfg.write_text(nsd_conf(self._tmp, self.nsd_port, self.zones))
            unbound_cfg = self._path("unbound.conf")
            unbound_cfg.write_text(
                unbound_conf(self._tmp, self.port, self.nsd_port, self.zones, anchors)
            )
            # NSD's own log is nsd.log (logfile); nsd.out catches what it says before that.
            self._nsd = _process.spawn([nsd, "-d", "-c", str(nsd_cfg)], self._path("nsd.out"))
            self._wait_nsd()
            self._unbound = _process.spawn(
                [unbound, "-d", "-c", str(unbound_cfg)], self._path("unbound.log")
            )
            self._wait_unbound()
        except BaseException:
            self.stop()
            raise
        return self

    def _ask(
        self, port: int, name: dns.name.Name, flags: int = 0, *, tcp: bool = False
    ) -> dns.message.Message:
        """The SOA of ``name``, with EDNS DO."""
        query = dns.message.make_query(name, dns.rdatatype.SOA, want_dnssec=True)
        query.flags |= flags
        ask = dns.query.tcp if tcp else dns.query.udp
        return ask(query, "127.0.0.1", port=port, timeout=_PROBE_TIMEOUT_S)

    def _check(self, what: str, port: int, name: dns.name.Name, flags: int) -> dns.message.Message:
        try:
            return self._ask(port, name, flags)
        except (dns.exception.DNSException, OSError) as exc:
            raise InfraError(
                f"{what} did not answer for {name} ({type(exc).__name__}: {exc}); "
                f"logs:\n{self.log_tail()}"
            ) from exc

    def _wait_answers(self, proc: subprocess.Popen[bytes], what: str, port: int) -> None:
        """Until ``proc`` answers a query at all; InfraError with the logs if it exits or time
        runs out first."""
        deadline = time.monotonic() + self._startup_timeout_s
        while True:
            code = proc.poll()
            if code is not None:
                raise InfraError(f"{what} exited with code {code}; logs:\n{self.log_tail()}")
            try:
                # TCP: refused at once while nothing listens (an unanswered UDP query would
                # wait out its timeout); both servers bind UDP and TCP before they answer.
                self._ask(port, self.zones[0].name, dns.flags.RD, tcp=True)
                return
            except (dns.exception.DNSException, OSError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise InfraError(
                    f"{what} not answering within {self._startup_timeout_s:g} s "
                    f"(last error: {last_error}); logs:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _wait_nsd(self) -> None:
        """Until NSD answers; then every zone must have loaded (NSD reads them all before it
        answers anything; a zone file it rejected is SERVFAIL)."""
        assert self._nsd is not None
        self._wait_answers(self._nsd, "nsd", self.nsd_port)
        for spec in self.zones:
            reply = self._check("nsd", self.nsd_port, spec.name, 0)
            if reply.rcode() != dns.rcode.NOERROR or not reply.flags & dns.flags.AA:
                raise InfraError(
                    f"nsd does not serve zone {spec.name} "
                    f"({dns.rcode.to_text(reply.rcode())}); logs:\n{self.log_tail()}"
                )

    def _wait_unbound(self) -> None:
        """Until Unbound answers; then each zone must validate as declared."""
        assert self._unbound is not None
        self._wait_answers(self._unbound, "unbound", self.port)
        for spec in self.zones:
            reply = self._check("unbound", self.port, spec.name, dns.flags.RD | dns.flags.AD)
            got = (dns.rcode.to_text(reply.rcode()), bool(reply.flags & dns.flags.AD))
            want = ("SERVFAIL", False) if spec.bogus else ("NOERROR", spec.signed)
            if got != want:
                raise InfraError(
                    f"unbound answered zone {spec.name} with (rcode, AD) {got}, not {want}; "
                    f"logs:\n{self.log_tail()}"
                )

    def log_tail(self) -> str:
        if self._tmp is None:
            return "(stopped)"
        parts = []
        for name in ("nsd.out", "nsd.log", "unbound.log"):
            if self._path(name).exists():
                parts.append(f"--- {name} ---\n{_process.log_tail(self._path(name), 30)}")
        return "\n".join(parts)

    def stop(self) -> None:
        if self._unbound is not None:
            _process.stop_process(self._unbound, 5)
            self._unbound = None
        if self._nsd is not None:
            _stop_nsd(self._nsd)
            self._nsd = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
