from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator

from postmesh.common.admin_token import AdminTokenSettings

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+)([smhdw]?)")


def parse_duration(text: str) -> float:
    """``90s``, ``5m``, ``4h``, ``5d``, ``1w`` (Postfix time units; a bare number is seconds)."""
    m = _DURATION.fullmatch(text.strip().lower())
    if m is None:
        raise ValueError(f"bad duration {text!r}: expected a number and one of s, m, h, d, w")
    return float(int(m.group(1)) * _UNITS[m.group(2) or "s"])


def parse_schedule(text: str) -> list[float]:
    steps = [parse_duration(s) for s in text.split(",") if s.strip()]
    if not steps or any(s <= 0 for s in steps):
        raise ValueError("the retry schedule needs at least one positive step")
    return steps


class DeliverySettings(AdminTokenSettings):
    ops_port: int = Field(default=9104, ge=0, le=65535)
    # Kafka consumer group: all delivery replicas share it, so partitions are split among them.
    delivery_group: str = "postmesh-delivery"
    # Inbound records handled at once: a new one starts as soon as one finishes, and each
    # partition's offset is committed up to its handled prefix (ADR 66); each recipient's
    # Deliver is idempotent and records are independent, so order does not matter. The
    # store writes the Delivers into one mailbox that meet at its lock as one group (ADR 35),
    # so more at once means fewer database commands per message (ADR 55); a record is at
    # most 1 MiB. 64 fills the store's largest group (ADR 76: 32 left it waiting on this).
    delivery_concurrency: int = Field(default=64, ge=1, le=256)
    # Local Delivers as messages on one long-lived stream to the store (StoreService.Calls,
    # ADR 71) instead of a new call each; off: unary calls, as to a store without Calls.
    delivery_store_call_stream: bool = True

    # Port of remote MX hosts (25; another only for tests or a smarthost set up so).
    smtp_port: int = Field(default=25, ge=1, le=65535)
    # Postfix's relayhost: send all remote mail there. ``host:port`` looks up MX records of
    # host; ``[host]:port`` (or an IP address) connects to it directly. Empty: MX routing.
    relayhost: str = ""
    # Postfix's transport(5) in one line: ``domain=host:port,.sub.domain=[host]:port``; a
    # leading dot matches every subdomain. Wins over relayhost for the domains it names.
    transport_map: str = ""
    # Back-off between attempts of a deferred recipient (Postfix-style units, the last step
    # repeating), and how long a recipient may stay deferred before it bounces (Action
    # failed, with the last deferral's status and reply, as Postfix).
    retry_schedule: str = "1m,5m,15m,1h,4h"
    queue_lifetime: str = "5d"
    # A recipient still deferred this long after it was queued gets its sender one delay
    # notice (RFC 3464 Action: delayed, with Will-Retry-Until and the last reply), at the
    # first retry past it, when its NOTIFY has DELAY or it has no NOTIFY (RFC 3461 §4.1); as
    # Postfix's delay_warning_time. 4 hours, as sendmail's and Exchange's default (ADR 86);
    # 0 turns delay notices off.
    delivery_delay_warning_seconds: float = Field(default=14400.0, ge=0)
    # More Received: headers than this is a mail loop (RFC 5321 §6.3): bounce with 5.4.6.
    max_received_headers: int = Field(default=50, ge=1)
    # How long auth's answer that a recipient domain is not local is reused for the next
    # recipients of that domain instead of asking again (ADR 44); 0 asks for every recipient.
    remote_domain_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    # Simultaneous SMTP connections to one destination (next-hop domain), as Postfix's
    # default_destination_concurrency_limit.
    destination_concurrency: int = Field(default=10, ge=1, le=1000)
    relay_connect_timeout_seconds: float = Field(default=30.0, gt=0)
    # Per SMTP command; the final reply to DATA may take as long (RFC 5321 §4.5.3.2: 10 min).
    relay_command_timeout_seconds: float = Field(default=300.0, gt=0)
    # How long an idle connection stays open for the next message to the same host.
    relay_connection_idle_seconds: float = Field(default=5.0, ge=0)
    # Deferred-queue workers: entries leased per claim, parallel attempts, lease length, and
    # the pause between claims when nothing is due. Parallel attempts well above
    # destination_concurrency (attempts past it wait for a connection slot): with room left,
    # the bus consumer's entries are born leased and attempted at once (ADR 15). At 20, the
    # relay bench's load left entries unleased, for ClaimDue and GetBlob (0.15 ClaimDue per
    # message; 0.01 at 50).
    queue_claim_batch: int = Field(default=50, ge=1, le=1000)
    # How long the bus consumer waits for a new message's first relay attempt before it
    # queues the message's remote recipients (with the content) and goes on; an attempt
    # finished by then needs no queue entry at all, unless deferred (ADR 58). The consumer's
    # batch waits as long for its slowest record. 0: every remote recipient is queued first.
    relay_first_attempt_seconds: float = Field(default=0.5, ge=0, le=60)
    # Kept above delivery_concurrency: a new record that finds every slot taken queues its
    # remote recipients instead of attempting them at once (ADR 76: 64 records in hand with
    # 50 slots cost the relay bench a third of its 4 KiB rate).
    queue_concurrency: int = Field(default=100, ge=1, le=1000)
    # A queue worker's lease on the entries it claimed, and its pause between claims when
    # nothing is due.
    queue_lease_seconds: int = Field(default=900, ge=1, le=86400)
    queue_poll_seconds: float = Field(default=1.0, gt=0)
    # RFC 8461 MTA-STS: look up and enforce the policies of destination domains.
    mta_sts: bool = True
    # RFC 7672 DANE: an MX host whose address and TLSA records the resolver signed (the AD bit)
    # gets TLS authenticated by those records, or no mail. It trusts the AD bit of
    # POSTMESH_DNS_SERVERS, which must then be a validating resolver on a trusted path (a
    # node-local unbound); a resolver that never sets AD leaves delivery as without DANE.
    dane: bool = True
    # Port of the MTA-STS policy host (443; another only for tests).
    mta_sts_https_port: int = Field(default=443, ge=1, le=65535)
    # CA bundle (PEM) for verifying MX certificates (an enforced MTA-STS policy, REQUIRETLS
    # messages) and the MTA-STS policy host; empty: the system's trust store.
    relay_ca_file: Path | None = None
    # Mail from these local domains is DKIM-signed before it leaves (keys from auth).
    dkim_signing: bool = True
    # Queue admin REST API (/api/v1/queue, /api/v1/trace); port 0 turns it off.
    queue_admin_host: str = "127.0.0.1"
    queue_admin_port: int = Field(default=8081, ge=0, le=65535)
    # Messages whose delivery steps each replica keeps in memory for /api/v1/trace.
    trace_max_messages: int = Field(default=20000, ge=1)

    @field_validator("retry_schedule")
    @classmethod
    def _check_schedule(cls, v: str) -> str:
        parse_schedule(v)
        return v

    @field_validator("queue_lifetime")
    @classmethod
    def _check_lifetime(cls, v: str) -> str:
        parse_duration(v)
        return v

    @field_validator("relayhost", "transport_map")
    @classmethod
    def _check_routes(cls, v: str, info: object) -> str:
        from postmesh.delivery.routing import parse_nexthop, parse_transport_map

        if getattr(info, "field_name", "") == "relayhost":
            if v.strip():
                parse_nexthop(v, 25)
        else:
            parse_transport_map(v, 25)
        return v

    @property
    def retry_steps(self) -> list[float]:
        return parse_schedule(self.retry_schedule)

    @property
    def queue_lifetime_seconds(self) -> float:
        return parse_duration(self.queue_lifetime)
