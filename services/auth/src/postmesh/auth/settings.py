from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from postmesh.common.config import ServiceSettings


class AuthSettings(ServiceSettings):
    ops_port: int = Field(default=9106, ge=0, le=65535)
    # gRPC listen address (edges reach it through POSTMESH_AUTH_ADDRESS).
    auth_listen: str = "127.0.0.1:50062"
    # sqlite (embedded, file under data_dir) or mongodb (production; MongoDB 6+ or FerretDB).
    auth_backend: Literal["sqlite", "mongodb"] = "sqlite"
    auth_sqlite_path: Path = Path("auth.sqlite3")
    # MongoDB connection string and database, when POSTMESH_AUTH_BACKEND=mongodb.
    mongodb_url: str = "mongodb://127.0.0.1:27017"
    mongodb_database: str = "postmesh"
    # The admin REST API (FastAPI); keep it on an internal network.
    admin_host: str = "127.0.0.1"
    admin_port: int = Field(default=8080, ge=0, le=65535)
    # Bearer token of the admin API. Unset: one is generated and kept in <data_dir>/admin-token.
    admin_token: str | None = Field(default=None, min_length=16)
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
