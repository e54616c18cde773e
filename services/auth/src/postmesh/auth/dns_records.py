"""The DNS records an operator publishes for a local domain: MX, SPF, DKIM, DMARC, MTA-STS,
TLS-RPT. Pure functions of the domain, its published DKIM keys and the configured policy."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from postmesh.auth.dkim_keys import KeyView
from postmesh.auth.settings import AuthSettings
from postmesh.common.mailauth import dkim


@dataclass(frozen=True, slots=True)
class DnsRecord:
    name: str  # fully qualified, without the trailing dot
    type: str  # MX, TXT, CNAME
    value: str  # TXT: the whole text; a provider splits it into 255-byte strings
    note: str | None = None


@dataclass(frozen=True, slots=True)
class DnsPolicy:
    mx_host: str
    spf: str = "v=spf1 mx -all"
    dmarc_policy: str = "quarantine"
    dmarc_rua: str = "mailto:postmaster@{domain}"
    mta_sts_mode: str = "testing"
    mta_sts_max_age_seconds: int = 604800
    mta_sts_policy_host: str = ""
    tls_rpt_rua: str = "mailto:postmaster@{domain}"

    @classmethod
    def from_settings(cls, s: AuthSettings) -> DnsPolicy:
        return cls(
            mx_host=(s.dns_mx_host or s.hostname).rstrip("."),
            spf=s.dns_spf_record,
            dmarc_policy=s.dns_dmarc_policy,
            dmarc_rua=s.dns_dmarc_rua,
            mta_sts_mode=s.dns_mta_sts_mode,
            mta_sts_max_age_seconds=s.dns_mta_sts_max_age_seconds,
            mta_sts_policy_host=s.dns_mta_sts_policy_host.rstrip("."),
            tls_rpt_rua=s.dns_tls_rpt_rua,
        )


def mta_sts_policy(policy: DnsPolicy) -> str:
    """The policy file (RFC 8461 section 3.2), CRLF line ends."""
    lines = [
        "version: STSv1",
        f"mode: {policy.mta_sts_mode}",
        f"mx: {policy.mx_host}",
        f"max_age: {policy.mta_sts_max_age_seconds}",
    ]
    return "".join(line + "\r\n" for line in lines)


def mta_sts_id(policy: DnsPolicy) -> str:
    # RFC 8461 section 3.1: id (1-32 alphanumerics) must change whenever the policy does;
    # deriving it from the policy text does that without any stored state.
    return hashlib.sha256(mta_sts_policy(policy).encode()).hexdigest()[:20]


def dns_records(domain: str, keys: Iterable[KeyView], policy: DnsPolicy) -> list[DnsRecord]:
    records = [
        DnsRecord(domain, "MX", f"10 {policy.mx_host}"),
        # RFC 7208: one SPF record per name; "mx" authorises the hosts we relay from when
        # delivery runs on the MX hosts, else configure POSTMESH_DNS_SPF_RECORD.
        DnsRecord(domain, "TXT", policy.spf),
    ]
    for v in keys:
        if v.state.published:
            note = None if v.state.value == "active" else f"{v.state.value} key"
            records.append(
                DnsRecord(
                    dkim.dns_name(v.key.selector, domain),
                    "TXT",
                    dkim.dns_txt_value(v.algorithm, v.key.public_key),
                    note,
                )
            )
    dmarc = f"v=DMARC1; p={policy.dmarc_policy}"
    if policy.dmarc_rua:
        dmarc += f"; rua={policy.dmarc_rua.replace('{domain}', domain)}"
    records.append(DnsRecord(f"_dmarc.{domain}", "TXT", dmarc))
    policy_host = policy.mta_sts_policy_host or policy.mx_host
    records.append(DnsRecord(f"_mta-sts.{domain}", "TXT", f"v=STSv1; id={mta_sts_id(policy)}"))
    records.append(
        DnsRecord(
            f"mta-sts.{domain}",
            "CNAME",
            policy_host,
            f"{policy_host} must serve https://mta-sts.{domain}/.well-known/mta-sts.txt with a "
            f"certificate valid for mta-sts.{domain}; the policy text is "
            f"GET /api/v1/domains/{domain}/mta-sts.txt",
        )
    )
    if policy.tls_rpt_rua:
        records.append(
            DnsRecord(
                f"_smtp._tls.{domain}",
                "TXT",
                f"v=TLSRPTv1; rua={policy.tls_rpt_rua.replace('{domain}', domain)}",
            )
        )
    return records
