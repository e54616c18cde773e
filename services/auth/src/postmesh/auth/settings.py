from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from postmesh.common.admin_token import AdminTokenSettings
from postmesh.common.mongo import MongoSettings


class AuthSettings(MongoSettings, AdminTokenSettings):
    ops_port: int = Field(default=9106, ge=0, le=65535)
    # gRPC listen address, host:port (mutual TLS) or unix:/path (ADR 73); edges reach it
    # through POSTMESH_AUTH_ADDRESS.
    auth_listen: str = "127.0.0.1:50062"
    # sqlite (embedded, file under data_dir) or mongodb (production; MongoDB 6+ or FerretDB).
    auth_backend: Literal["sqlite", "mongodb"] = "sqlite"
    auth_sqlite_path: Path = Path("auth.sqlite3")
    # MongoDB database, when the backend is mongodb (the connection: POSTMESH_MONGODB_URL etc.).
    mongodb_database: str = "postmesh"
    # The admin REST API (FastAPI); keep it on an internal network.
    admin_host: str = "127.0.0.1"
    admin_port: int = Field(default=8080, ge=0, le=65535)
    # Failed-login lockout, shared by all replicas (docs/operations.md "Login lockout"):
    # this many failures within the window lock the account / the client IP for lockout_seconds.
    auth_lockout_account_failures: int = Field(default=10, ge=1)
    auth_lockout_ip_failures: int = Field(default=100, ge=1)
    auth_lockout_window_seconds: float = Field(default=900.0, gt=0)
    auth_lockout_seconds: float = Field(default=900.0, ge=0)
    # Back-off before answering a failed login: base * 2^(failures-1) seconds, capped; 0: none.
    auth_backoff_base_seconds: float = Field(default=0.25, ge=0)
    auth_backoff_max_seconds: float = Field(default=4.0, ge=0, le=8)
    # PBKDF2 iterations of new SCRAM-SHA-256 keys (RFC 7677: at least 4096).
    auth_scram_iterations: int = Field(default=4096, ge=4096, le=1_000_000)
    # Successful password checks remembered this long (per replica), so frequent polling does not
    # pay argon2 every time; a password change takes effect at once. 0 turns the cache off.
    auth_login_cache_seconds: float = Field(default=300.0, ge=0)
    auth_login_cache_entries: int = Field(default=10_000, ge=0)
    # Recipient resolutions that deliver to local users remembered this long at most (per
    # replica; ADR 45): a change through this replica takes effect at once, one through another
    # within about a second (a change stamp). Unknown addresses are never cached. 0: off.
    auth_resolution_cache_seconds: float = Field(default=60.0, ge=0)
    # Plus-addressing (Postfix's recipient_delimiter): user+tag@domain delivers to user@domain
    # when no user or alias has the full address. Each character is a delimiter; empty: off.
    auth_recipient_delimiter: str = Field(default="+", max_length=8, pattern=r"^[^@\s]*$")
    # RFC 5321 §4.5.1: mail for postmaster@ every hosted domain, and for <Postmaster> with no
    # domain, must be accepted. An address (a local user or alias, or a remote address) that
    # gets it when the domain has no postmaster user or alias of its own (one made through the
    # admin API wins). Empty: only those made per domain; the service warns at start.
    auth_postmaster: str = ""
    # DKIM (RFC 6376): every new domain gets an RSA 2048 key (rsa-sha256), and an Ed25519 key
    # (RFC 8463) too unless this is false; delivery signs with both.
    dkim_ed25519: bool = True
    # How long after POST .../dkim-keys/rotate the new key starts signing (unless the request
    # says otherwise): time to publish its TXT record and for resolvers to see it.
    dkim_rotation_activation_seconds: float = Field(default=86400.0, ge=0)
    # How long a superseded key stays in dns-records (and should stay in DNS) after its
    # successor starts signing: messages in flight and in queues are verified with it.
    dkim_retired_grace_seconds: float = Field(default=7 * 86400.0, ge=0)
    # GET /api/v1/domains/{name}/dns-records: the records an operator publishes. MX target;
    # empty: POSTMESH_HOSTNAME.
    dns_mx_host: str = ""
    # The SPF TXT record (RFC 7208) of every local domain.
    dns_spf_record: str = "v=spf1 mx -all"
    # DMARC (RFC 7489) policy and aggregate-report address ("{domain}" is replaced; empty: no rua).
    dns_dmarc_policy: Literal["none", "quarantine", "reject"] = "quarantine"
    dns_dmarc_rua: str = "mailto:postmaster@{domain}"
    # MTA-STS (RFC 8461) policy mode and max_age that the policy host must serve; the TXT id is
    # derived from the policy text, so it changes whenever the policy does.
    dns_mta_sts_mode: Literal["none", "testing", "enforce"] = "testing"
    dns_mta_sts_max_age_seconds: int = Field(default=604800, ge=0, le=31557600)
    # Host that serves https://mta-sts.<domain>/.well-known/mta-sts.txt (CNAME target);
    # empty: the MX host.
    dns_mta_sts_policy_host: str = ""
    # SMTP TLS reporting (RFC 8460) address ("{domain}" is replaced).
    dns_tls_rpt_rua: str = "mailto:postmaster@{domain}"
