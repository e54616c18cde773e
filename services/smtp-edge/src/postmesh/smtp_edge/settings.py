from __future__ import annotations

import re
import socket
from typing import Literal

from pydantic import Field, field_validator

from postmesh.common.config import ServiceSettings
from postmesh.common.dns import parse_dns_servers

MIB = 1024 * 1024
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class SmtpEdgeSettings(ServiceSettings):
    ops_port: int = Field(default=9101, ge=0, le=65535)
    # This host's fully qualified name (as Postfix's myhostname, default the system's FQDN):
    # in the 220 greeting, the EHLO reply, Received: and Authentication-Results headers.
    hostname: str = Field(default_factory=socket.getfqdn)
    # DNS servers for SPF/DKIM/DMARC/ARC and reverse lookups: comma-separated ip[:port]
    # ("[v6]:port" for IPv6); empty means the system resolver (/etc/resolv.conf).
    dns_servers: str = ""
    # Per-lookup timeout; a lookup that times out makes the check's result temperror.
    dns_timeout_seconds: float = Field(default=5.0, gt=0)
    # Address the mail listeners bind to (0.0.0.0 in a container).
    smtp_host: str = "127.0.0.1"
    # Production: 25 (MX), 587 (submission, RFC 6409) and 465 (implicit TLS, RFC 8314).
    smtp_mx_port: int = Field(default=2525, ge=0, le=65535)
    smtp_submission_port: int = Field(default=2587, ge=0, le=65535)
    smtp_submissions_port: int = Field(default=2465, ge=0, le=65535)
    # As Postfix's smtpd_sasl_auth_enable on port 25: off, so the MX only takes local mail.
    smtp_mx_auth_enabled: bool = False
    # Advertised with SIZE (RFC 1870) and enforced on DATA.
    smtp_max_message_bytes: int = Field(default=50 * MIB, ge=1024)
    # Larger messages go to the store first and the bus record names the blob (claim check):
    # Kafka's default max request is 1 MiB.
    smtp_inline_limit_bytes: int = Field(default=512 * 1024, ge=0)
    # Message lines ending in a bare LF (RFC 5321 §2.3.8 wants CRLF): "normalize" stores them
    # as CRLF lines, "reject" answers 550 5.6.0 (Postfix 3.9 smtpd_forbid_bare_newline). Only
    # CRLF.CRLF ends DATA either way, and a bare CR is always refused.
    smtp_bare_newline: Literal["normalize", "reject"] = "normalize"
    # On the MX (not for authenticated clients): SPF for MAIL FROM and HELO, DKIM, ARC and
    # DMARC, recorded in an Authentication-Results header naming POSTMESH_HOSTNAME.
    smtp_inbound_auth: bool = True
    # Refuse a DMARC failure whose domain asks p=reject with 550 5.7.1 (RFC 7489 §10.1); when
    # false such mail is quarantined instead.
    smtp_dmarc_reject: bool = True
    # Where a DMARC p=quarantine failure is filed for local recipients; empty means INBOX.
    smtp_dmarc_quarantine_mailbox: str = "Junk"
    # Content scan by rspamd's HTTP protocol, e.g. http://127.0.0.1:11333 (its normal worker);
    # empty: no scan. reject -> 550 5.7.1, soft reject/greylist -> 451 4.7.1, add header and
    # rewrite subject -> accepted with X-Spam: Yes and filed into the spam mailbox.
    smtp_rspamd_url: str = ""
    smtp_rspamd_timeout_seconds: float = Field(default=10.0, gt=0)
    # When rspamd cannot answer: accept the message unscanned (true), or defer it with 451.
    smtp_rspamd_fail_open: bool = True
    # Scan mail from authenticated clients too (submission); the MX is always scanned.
    smtp_rspamd_scan_submission: bool = False
    # Where mail rspamd marks as spam is filed for local recipients; empty means INBOX.
    smtp_spam_mailbox: str = "Junk"
    # Authenticated clients may use as envelope sender and in From only addresses that
    # deliver to them (their own or an alias's; 553 5.7.1 otherwise), as Postfix's
    # reject_sender_login_mismatch.
    smtp_sender_login_check: bool = True
    # Concurrent connections from one client address to this replica, as Postfix's
    # smtpd_client_connection_count_limit (421 4.7.0 in the greeting past it); 0: no limit.
    # Loopback clients are exempt.
    smtp_max_connections_per_ip: int = Field(default=50, ge=0)
    # Messages per minute from one sender (the authenticated user, else the client address)
    # through this replica, as Postfix's smtpd_client_message_rate_limit (450 4.7.1 at MAIL
    # past it); 0: no limit. Loopback clients are exempt.
    smtp_max_messages_per_minute: int = Field(default=0, ge=0)
    # RFC 5321 §4.5.3.1.8 requires accepting at least 100 recipients.
    smtp_max_recipients: int = Field(default=100, ge=1)
    # RCPT's answer "a local user" is kept this long (0: auth is asked for every RCPT). A user
    # removed or disabled meanwhile is accepted for that long, and delivery, which looks up
    # again, bounces the message; unknown, disabled and remote answers are never kept here
    # (ADR 43). Only an authenticated session reuses, for as long and in its own next
    # transactions, auth's "this user owns this sender" and "this domain is remote" (ADR 53).
    smtp_recipient_cache_seconds: float = Field(default=5.0, ge=0)
    # RFC 5321 §4.5.3.2.7: the server should wait at least 5 minutes for the next command.
    smtp_idle_timeout_seconds: float = Field(default=300.0, gt=0)
    smtp_tls_handshake_timeout_seconds: float = Field(default=30.0, gt=0)
    # As Postfix's smtpd_hard_error_limit: 4xx/5xx replies after which we hang up with 421.
    smtp_max_errors: int = Field(default=20, ge=1)
    smtp_max_auth_failures: int = Field(default=3, ge=1)
    # Slows password guessing; tests set 0.
    smtp_auth_failure_delay_seconds: float = Field(default=1.0, ge=0)

    @field_validator("hostname")
    @classmethod
    def _hostname_is_a_domain(cls, v: str) -> str:
        name = v.rstrip(".").lower()
        if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
            raise ValueError("must be a host name (letters, digits, hyphens; dot-separated)")
        return name

    @field_validator("dns_servers")
    @classmethod
    def _dns_servers_parse(cls, v: str) -> str:
        parse_dns_servers(v)
        return v
