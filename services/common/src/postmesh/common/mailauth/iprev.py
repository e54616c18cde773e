"""The client's verified reverse name ("iprev", RFC 8601 §3 and §2.7.3; forward-confirmed
reverse DNS as Postfix's ``reverse_client_name`` check): the PTR names of the address whose
A/AAAA records lead back to it. Used in the Received header and in Authentication-Results."""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

from postmesh.common.mailauth.dnsclient import DnsTempError, Resolver, reverse_name

# RFC 8601 §3 / RFC 7208 §4.6.4 in spirit: bound the work one client can cause.
MAX_PTR_NAMES = 10


@dataclass(frozen=True, slots=True)
class IprevResult:
    result: str  # pass, fail, temperror, permerror (RFC 8601 §2.7.3)
    name: str = ""  # the verified name, when result is pass


async def check_iprev(resolver: Resolver, ip: str) -> IprevResult:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return IprevResult("permerror")
    if addr.is_loopback:
        # RFC 6761 §6.3: loopback is "localhost" by definition; no lookup needed.
        return IprevResult("pass", "localhost")
    try:
        ptr = await resolver.query(reverse_name(ip), "PTR")
        if not ptr.values:
            return IprevResult("permerror" if ptr.nxdomain else "fail")
        rdtype = "AAAA" if addr.version == 6 else "A"
        names = ptr.values[:MAX_PTR_NAMES]
        answers = await asyncio.gather(
            *(resolver.query(n, rdtype) for n in names), return_exceptions=True
        )
    except DnsTempError:
        return IprevResult("temperror")
    temp = False
    for name, answer in zip(names, answers, strict=True):
        if isinstance(answer, DnsTempError):
            temp = True
            continue
        if isinstance(answer, BaseException):
            raise answer
        if any(_same_ip(v, addr) for v in answer.values):
            return IprevResult("pass", name.lower())
    return IprevResult("temperror" if temp else "fail")


def _same_ip(text: str, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(text) == addr
    except ValueError:
        return False
