"""Inbound mail authentication on the MX: SPF (started at MAIL FROM, so it runs while the
client sends RCPT and DATA, with the sender domain's DMARC policy asked ahead), DKIM and ARC on the received message, DMARC on top, and the
verdict: the Authentication-Results header (RFC 8601) naming this host, a 550 5.7.1 for a
DMARC p=reject failure, the Junk mailbox for p=quarantine (RFC 7489 §6.3, §10.1).

Submission (authenticated clients) is not checked: the user is the authentication."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from postmesh.common.logging import get_logger, kv
from postmesh.common.mailauth.arc import ArcResult, verify_arc
from postmesh.common.mailauth.authresults import MethodResult, Property, authentication_results
from postmesh.common.mailauth.dkim_verify import DkimResult, verify_dkim
from postmesh.common.mailauth.dmarc import DmarcResult, check_dmarc
from postmesh.common.mailauth.dnsclient import Resolver
from postmesh.common.mailauth.dnsmemo import TransactionDns
from postmesh.common.mailauth.iprev import IprevResult
from postmesh.common.mailauth.psl import default_list
from postmesh.common.mailauth.spf import SpfResult, check_helo, check_spf
from postmesh.smtp_edge import metrics

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SpfChecks:
    mailfrom: SpfResult
    helo: SpfResult


@dataclass(frozen=True, slots=True)
class InboundChecks:
    """One transaction's checks under way: its DNS answers (asked once) and SPF."""

    dns: TransactionDns
    spf: asyncio.Task[SpfChecks]

    def cancel(self) -> None:
        self.spf.cancel()  # no-op when done
        self.dns.close()


@dataclass(frozen=True, slots=True)
class Verdict:
    header: bytes  # the Authentication-Results field, CRLF-terminated
    reject: str = ""  # an SMTP reply refusing the message, or "" to accept
    mailbox: str = ""  # where local delivery files it ("" = INBOX)


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    enabled: bool
    dmarc_reject: bool  # refuse p=reject failures (else they are quarantined)
    quarantine_mailbox: str  # "" disables filing quarantined mail apart


class InboundAuthenticator:
    def __init__(self, resolver: Resolver, hostname: str, policy: AuthPolicy) -> None:
        self.resolver = resolver
        self.hostname = hostname
        self.policy = policy

    def start(self, ip: str, sender: str, helo: str) -> InboundChecks:
        """At MAIL FROM: SPF of both identities, and the MAIL FROM domain's DMARC policy
        asked ahead (the From domain is most often the same), while RCPT and DATA go on."""
        dns = TransactionDns(self.resolver)
        domain = sender.rpartition("@")[2].lower().rstrip(".")
        if domain and not domain.startswith("["):
            for name in {domain, default_list().organizational_domain(domain)}:
                dns.prefetch(f"_dmarc.{name}", "TXT")

        async def both() -> SpfChecks:
            mailfrom, helo_result = await asyncio.gather(
                check_spf(dns, ip, sender, helo), check_helo(dns, ip, helo)
            )
            return SpfChecks(mailfrom, helo_result)

        return InboundChecks(dns, asyncio.ensure_future(both()))

    async def evaluate(
        self, content: bytes, remote_ip: str, iprev: IprevResult, checks: InboundChecks
    ) -> Verdict:
        spf = await checks.spf
        dns = checks.dns
        dkim, arc = await asyncio.gather(verify_dkim(dns, content), verify_arc(dns, content))
        dmarc = await check_dmarc(dns, content, spf.mailfrom, dkim)
        for method, result in (
            ("spf", spf.mailfrom.result),
            ("dmarc", dmarc.result),
            ("arc", arc.result),
            *(("dkim", r.result) for r in dkim or [DkimResult("none")]),
        ):
            metrics.AUTH_RESULTS.labels(method, result).inc()
        log.info(
            "authentication results",
            extra=kv(
                iprev=iprev.result,
                spf=spf.mailfrom.result,
                spf_helo=spf.helo.result,
                dkim=[f"{r.result}:{r.domain}" for r in dkim],
                arc=arc.result,
                dmarc=dmarc.result,
                dmarc_policy=dmarc.policy,
                disposition=dmarc.disposition,
                header_from=dmarc.header_from,
            ),
        )
        header = authentication_results(
            self.hostname, render(remote_ip, iprev, spf, dkim, arc, dmarc)
        )
        if dmarc.result != "fail" or dmarc.disposition == "none":
            return Verdict(header)
        if dmarc.disposition == "reject" and self.policy.dmarc_reject:
            # RFC 7489 §6.6.4/§10.1: reject during the SMTP transaction, naming the reason.
            return Verdict(
                header,
                reject=f"550 5.7.1 Message rejected per DMARC policy of {dmarc.policy_domain}",
            )
        return Verdict(header, mailbox=self.policy.quarantine_mailbox)


def render(
    remote_ip: str,
    iprev: IprevResult,
    spf: SpfChecks,
    dkim: list[DkimResult],
    arc: ArcResult,
    dmarc: DmarcResult,
) -> list[MethodResult]:
    """The resinfo list in the order readers expect (as OpenDKIM/OpenDMARC/Mox write it)."""
    out = [
        MethodResult(
            "iprev", iprev.result, [Property("policy", "iprev", remote_ip)], comment=iprev.name
        )
    ]
    if spf.mailfrom.identity == "mailfrom":
        # RFC 8601 §2.7.2: smtp.mailfrom is the MAIL FROM domain checked.
        out.append(
            MethodResult(
                "spf", spf.mailfrom.result, [Property("smtp", "mailfrom", spf.mailfrom.domain)]
            )
        )
    out.append(MethodResult("spf", spf.helo.result, [Property("smtp", "helo", spf.helo.domain)]))
    if not dkim:
        out.append(MethodResult("dkim", "none"))
    for r in dkim:
        props = [Property("header", "d", r.domain), Property("header", "s", r.selector)]
        if r.b:
            props.append(Property("header", "b", r.b))
        out.append(MethodResult("dkim", r.result, props, reason=r.reason))
    out.append(MethodResult("arc", arc.result, comment=arc.reason if arc.result == "fail" else ""))
    dmarc_comment = ""
    if dmarc.result in ("pass", "fail"):
        dmarc_comment = f"p={dmarc.policy} dis={dmarc.disposition.upper()}"
    props = [Property("header", "from", dmarc.header_from)] if dmarc.header_from else []
    out.append(
        MethodResult("dmarc", dmarc.result, props, comment=dmarc_comment, reason=dmarc.reason)
    )
    return out
