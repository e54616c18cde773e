"""Typed settings from POSTMESH_* environment variables (12-factor).

Every service subclasses :class:`ServiceSettings`; :func:`load_settings` validates at start and
stops the process with a message that names the offending variable.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from postmesh.common.net import Network, parse_networks

ENV_PREFIX = "POSTMESH_"


class ServiceSettings(BaseSettings):
    """Settings every service has. Field ``foo_bar`` is read from ``POSTMESH_FOO_BAR``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # Threshold of the JSON log lines on stderr.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Ops HTTP server: /metrics, /healthz, /readyz.
    ops_host: str = "127.0.0.1"
    # Each service has its own default (9101-9106, see below).
    ops_port: int = Field(default=9100, ge=0, le=65535)
    # Where state of the embedded backends lives (SQLite files, dev TLS certificate).
    data_dir: Path = Path(".postmesh")
    # sqlite: the embedded bus (one host); kafka: Apache Kafka (production).
    bus: Literal["sqlite", "kafka"] = "sqlite"
    # Comma-separated host:port list, when POSTMESH_BUS=kafka.
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # Embedded bus database; relative paths are under data_dir.
    bus_sqlite_path: Path = Path("bus.sqlite3")
    # Where the store's and auth's gRPC APIs are reached (host:port; a Service name in Kubernetes).
    store_address: str = "127.0.0.1:50061"
    auth_address: str = "127.0.0.1:50062"
    # Mutual TLS of the internal gRPC hops (ADR 10): this service's certificate (its identity is
    # the subjectAltName <service>.postmesh.internal), its key, and the CA that signed every
    # service's certificate. Relative paths are under data_dir. `make run` makes a throwaway set.
    grpc_tls_cert_file: Path | None = None
    # The private key of POSTMESH_GRPC_TLS_CERT_FILE.
    grpc_tls_key_file: Path | None = None
    # The CA certificate(s) peers' certificates must chain to.
    grpc_tls_ca_file: Path | None = None
    # Internal gRPC without TLS or caller authentication; logged as a warning at start. Only for
    # a cluster whose network is otherwise trusted, never the default.
    grpc_plaintext: bool = False
    # Default deadline for an internal gRPC call.
    grpc_deadline_seconds: float = Field(default=10.0, gt=0)

    # PEM files for the TLS listeners; when unset a self-signed pair is made in data_dir.
    tls_cert_file: Path | None = None
    # The private key of POSTMESH_TLS_CERT_FILE.
    tls_key_file: Path | None = None
    # Host name announced in greetings and Received: headers.
    hostname: str = "localhost"
    # Protocol edges only (smtp-edge, imap-gw, pop3-gw): every connection to a mail listener
    # must start with a PROXY protocol v1/v2 header from the load balancer, and its client
    # address is the one the session uses (logs, Received:, loopback check). Enable only
    # behind a balancer that sends it: the spec forbids guessing, so a direct client is refused.
    proxy_protocol: bool = False
    # How long a new connection may take to send its PROXY header (the spec: a few seconds,
    # at least 3 to cover a TCP retransmit; Postfix's smtpd_upstream_proxy_timeout is 5).
    proxy_protocol_timeout_seconds: float = Field(default=5.0, gt=0)
    # The load balancers allowed to send a PROXY header, as a comma-separated CIDR list (as
    # Dovecot's haproxy_trusted_networks). A connection from any other peer is closed unanswered
    # and counted in postmesh_proxy_connections_refused_total: otherwise a client reaching an
    # edge directly could claim to be 127.0.0.1. Empty refuses every connection while
    # POSTMESH_PROXY_PROTOCOL is on.
    proxy_trusted_networks: str = ""

    @field_validator("proxy_trusted_networks")
    @classmethod
    def _valid_networks(cls, v: str) -> str:
        parse_networks(v)
        return v

    def trusted_proxy_networks(self) -> tuple[Network, ...]:
        return parse_networks(self.proxy_trusted_networks)

    def data_path(self, p: Path) -> Path:
        return p if p.is_absolute() else self.data_dir / p


S = TypeVar("S", bound=ServiceSettings)


def format_validation_error(cls: type[BaseSettings], err: ValidationError) -> str:
    prefix = str(cls.model_config.get("env_prefix", ENV_PREFIX))
    lines = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "?"
        env = (prefix + field).upper()
        lines.append(f"invalid setting {env}={e.get('input')!r}: {e['msg']}")
    return "\n".join(lines)


def load_settings(cls: type[S]) -> S:
    """Read and validate settings, or exit with status 2 naming every bad variable."""
    try:
        return cls()
    except ValidationError as err:
        print(format_validation_error(cls, err), file=sys.stderr)
        raise SystemExit(2) from None
