"""Asynchronous DNS for mail authentication: dnspython's resolver pointed at
POSTMESH_DNS_SERVERS, with a per-query timeout.

Results are normalised the way SPF/DKIM/DMARC need them (RFC 7208 §2.6, RFC 7489 §6.6.3):
an empty answer or NXDOMAIN is "no record" (an empty list; :attr:`Answer.nxdomain` tells them
apart for the void-lookup count), while a timeout or a server failure raises
:class:`DnsTempError`, which the callers turn into ``temperror``."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename


class DnsTempError(Exception):
    """The answer could not be had now (timeout, SERVFAIL, no server reachable)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The records of one type at one name. TXT values are the concatenated character-strings
    of each record (RFC 7208 §3.3); MX values are ``(preference, exchange)``; others text."""

    values: list[str]
    nxdomain: bool = False


class Resolver(Protocol):
    async def query(self, name: str, rdtype: str) -> Answer: ...


def parse_servers(text: str) -> list[tuple[str, int]]:
    """``"127.0.0.1:53,[::1]:5353,10.0.0.2"`` as (address, port) pairs; port 53 by default."""
    out: list[tuple[str, int]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        host, port = item, 53
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            if rest:
                port = int(rest.removeprefix(":"))
        elif item.count(":") == 1:
            host, _, p = item.partition(":")
            port = int(p)
        ipaddress.ip_address(host)  # dnspython wants addresses: a name here is a config error
        if not 0 < port < 65536:
            raise ValueError(f"bad DNS server port in {item!r}")
        out.append((host, port))
    return out


class DnsClient:
    """One resolver for the process. ``servers`` empty means the system's (/etc/resolv.conf)."""

    def __init__(self, servers: list[tuple[str, int]], timeout: float) -> None:
        if servers:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = [h for h, _ in servers]
            ports = {p for _, p in servers}
            if len(ports) == 1:
                self._resolver.port = ports.pop()
            else:
                self._resolver.nameserver_ports = dict(servers)
        else:
            self._resolver = dns.asyncresolver.Resolver()
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout
        self.timeout = timeout

    async def query(self, name: str, rdtype: str) -> Answer:
        try:
            answer = await self._resolver.resolve(
                dns.name.from_text(name), rdtype, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN:
            return Answer([], nxdomain=True)
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as e:
            raise DnsTempError(f"{rdtype} {name}: {type(e).__name__}") from None
        except (dns.name.LabelTooLong, dns.name.NameTooLong, dns.name.EmptyLabel):
            return Answer([], nxdomain=True)
        except dns.exception.DNSException as e:
            raise DnsTempError(f"{rdtype} {name}: {e}") from None
        if answer.rrset is None:
            return Answer([])
        return Answer([_rdata_text(r, rdtype) for r in answer.rrset])


def _rdata_text(rdata: object, rdtype: str) -> str:
    kind = dns.rdatatype.from_text(rdtype)
    if kind == dns.rdatatype.TXT:
        strings: tuple[bytes, ...] = rdata.strings  # type: ignore[attr-defined]
        return b"".join(strings).decode("utf-8", "replace")
    if kind == dns.rdatatype.MX:
        return f"{rdata.preference} {rdata.exchange.to_text(omit_final_dot=True)}"  # type: ignore[attr-defined]
    if kind in (dns.rdatatype.PTR, dns.rdatatype.CNAME):
        return str(rdata.target.to_text(omit_final_dot=True))  # type: ignore[attr-defined]
    return str(rdata.to_text())  # type: ignore[attr-defined]


def reverse_name(ip: str) -> str:
    return dns.reversename.from_address(ip).to_text(omit_final_dot=True)
