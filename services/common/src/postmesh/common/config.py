"""Typed settings from POSTMESH_* environment variables (12-factor).

Every service subclasses :class:`ServiceSettings`; :func:`load_settings` validates at start and
stops the process with a message that names the offending variable.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from postmesh.common.net import Network, parse_networks
from postmesh.common.secrets import REDACTED, check_secret_file, read_secret

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
    # How the Kafka clients talk to the brokers: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or
    # SASL_SSL (a managed Kafka: SASL over TLS). The bus's start fails, naming these settings,
    # when the brokers refuse it.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    # SASL mechanism with SASL_*: SCRAM-SHA-512 or SCRAM-SHA-256 (RFC 5802/7677; the password
    # never crosses the wire) or PLAIN (only over SASL_SSL).
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = "SCRAM-SHA-512"
    # The SASL user name.
    kafka_username: str = ""
    # The SASL password; prefer POSTMESH_KAFKA_PASSWORD_FILE (a mounted Secret). Never logged.
    kafka_password: SecretStr | None = None
    # A file holding the SASL password (a mounted Secret; read when the clients are made).
    kafka_password_file: Path | None = None
    # With SSL/SASL_SSL: the CA certificate(s) the brokers' certificates must chain to; unset
    # uses the system's trusted CAs (a managed Kafka with a public certificate).
    kafka_tls_ca_file: Path | None = None
    # Client certificate and key for brokers that authenticate clients by TLS (ssl.client.auth).
    kafka_tls_cert_file: Path | None = None
    # The private key of POSTMESH_KAFKA_TLS_CERT_FILE.
    kafka_tls_key_file: Path | None = None
    # Prepended to every Kafka topic name ("tenant-a." makes tenant-a.postmesh.inbound, ...), so
    # several Postmesh installations (or test stacks) can share one Kafka cluster. Every service
    # of one installation must use the same prefix; the delivery consumer group is
    # POSTMESH_DELIVERY_GROUP.
    kafka_topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]{0,100}$")
    # Embedded bus database; relative paths are under data_dir.
    bus_sqlite_path: Path = Path("bus.sqlite3")
    # Where the store's and auth's gRPC APIs are reached: a gRPC target, host:port or
    # dns:///host:port (calls are spread round robin over every address the name resolves to,
    # e.g. a headless Service's pods) or ipv4:addr:port,addr:port,... (ADR 37); or a Unix
    # socket, unix:/path, for services on one machine as one user: no TLS there, the socket's
    # file permissions (0600; its directory 0700 if the store or auth creates it) decide who
    # may call (ADR 73). `make run` uses Unix sockets.
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
    # DNS servers for MX/A/TXT look-ups (delivery) and SPF/DMARC (smtp-edge): comma-separated
    # host:port list of IP addresses ([v6]:port); empty uses the system resolver (resolv.conf).
    dns_servers: str = ""

    @field_validator("dns_servers")
    @classmethod
    def _check_dns_servers(cls, v: str) -> str:
        from postmesh.common.dns import parse_dns_servers

        parse_dns_servers(v)  # raises ValueError naming the bad server
        return v

    # PEM files for the TLS listeners; when unset a self-signed pair is made in data_dir.
    tls_cert_file: Path | None = None
    # The private key of POSTMESH_TLS_CERT_FILE.
    tls_key_file: Path | None = None
    # How often (seconds) the services check their certificate files for a renewal and take it
    # for new connections without a restart: the edges' POSTMESH_TLS_CERT_FILE/KEY_FILE and
    # everyone's POSTMESH_GRPC_TLS_*_FILE (ADR 49); 0 turns the check off.
    tls_reload_seconds: float = Field(default=60.0, ge=0)
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

    @field_validator("kafka_password_file")
    @classmethod
    def _readable_secret(cls, v: Path | None) -> Path | None:
        return check_secret_file(v)

    @model_validator(mode="after")
    def _kafka_security_consistent(self) -> ServiceSettings:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        has_password = self.kafka_password is not None or self.kafka_password_file is not None
        if self.kafka_password is not None and self.kafka_password_file is not None:
            raise ValueError(
                "set POSTMESH_KAFKA_PASSWORD or POSTMESH_KAFKA_PASSWORD_FILE, not both"
            )
        if sasl and not (self.kafka_username and has_password):
            raise ValueError(
                f"POSTMESH_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "POSTMESH_KAFKA_USERNAME and POSTMESH_KAFKA_PASSWORD(_FILE)"
            )
        if (self.kafka_tls_cert_file is None) != (self.kafka_tls_key_file is None):
            raise ValueError("POSTMESH_KAFKA_TLS_CERT_FILE and _KEY_FILE go together")
        return self

    def kafka_password_value(self) -> str | None:
        return read_secret(self.kafka_password, self.kafka_password_file)

    def trusted_proxy_networks(self) -> tuple[Network, ...]:
        return parse_networks(self.proxy_trusted_networks)

    def data_path(self, p: Path) -> Path:
        return p if p.is_absolute() else self.data_dir / p


S = TypeVar("S", bound=ServiceSettings)


def format_validation_error(cls: type[BaseSettings], err: ValidationError) -> str:
    prefix = str(cls.model_config.get("env_prefix", ENV_PREFIX))
    lines = []
    for e in err.errors():
        if not e["loc"]:
            # A check across settings: its input is every setting, secrets included.
            lines.append(f"invalid settings: {e['msg']}")
            continue
        field = ".".join(str(p) for p in e["loc"])
        env = (prefix + field).upper()
        value = REDACTED if _is_secret(cls, str(e["loc"][0])) else repr(e.get("input"))
        lines.append(f"invalid setting {env}={value}: {e['msg']}")
    return "\n".join(lines)


def _is_secret(cls: type[BaseSettings], name: str) -> bool:
    field = cls.model_fields.get(name)
    return field is not None and "SecretStr" in str(field.annotation)


def load_settings(cls: type[S]) -> S:
    """Read and validate settings, or exit with status 2 naming every bad variable."""
    try:
        return cls()
    except ValidationError as err:
        print(format_validation_error(cls, err), file=sys.stderr)
        raise SystemExit(2) from None
