"""TLS and SASL of the Kafka clients: one place turns the settings into aiokafka's arguments,
so the producer, every consumer and the admin client connect the same way."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.helpers import create_ssl_context

from postmesh.common.config import ServiceSettings
from postmesh.common.secrets import REDACTED


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str = ""
    # Read when a client is made (not kept in memory longer than the client needs it).
    password_file: Path | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @classmethod
    def from_settings(cls, s: ServiceSettings) -> KafkaSecurity:
        return cls(
            protocol=s.kafka_security_protocol,
            sasl_mechanism=s.kafka_sasl_mechanism,
            username=s.kafka_username,
            password_file=s.kafka_password_file,
            password=s.kafka_password.get_secret_value() if s.kafka_password else None,
            ca_file=s.kafka_tls_ca_file,
            cert_file=s.kafka_tls_cert_file,
            key_file=s.kafka_tls_key_file,
        )

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
        kw: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            # create_ssl_context always checks the broker's host name against its certificate.
            kw["ssl_context"] = create_ssl_context(
                cafile=self.ca_file, certfile=self.cert_file, keyfile=self.key_file
            )
        if self.sasl:
            password = self.password_file.read_text().rstrip("\r\n") if self.password_file else None
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.username
            kw["sasl_plain_password"] = password if password is not None else self.password
        return kw

    def describe(self) -> str:
        """For log lines and errors: what was tried, without the password."""
        text = f"security protocol {self.protocol}"
        if self.sasl:
            text += f", SASL {self.sasl_mechanism} as {self.username!r} (password {REDACTED})"
        if self.tls:
            text += f", CA {self.ca_file or 'system default'}"
        return text
