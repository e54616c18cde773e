from __future__ import annotations

from pydantic import Field

from postmesh.common.config import ServiceSettings


class DeliverySettings(ServiceSettings):
    ops_port: int = Field(default=9104, ge=0, le=65535)
    # Kafka consumer group: all delivery replicas share it, so partitions are split among them.
    delivery_group: str = "postmesh-delivery"
    # Remote relay: DNS server for MX lookups ("" = the system resolver), and the port of remote
    # MXs (25 in production; tests point it at a peer on loopback).
    dns_nameserver: str = ""
    dns_port: int = Field(default=53, ge=1, le=65535)
    relay_port: int = Field(default=25, ge=1, le=65535)
    relay_timeout_seconds: float = Field(default=60.0, gt=0)
