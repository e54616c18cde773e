from __future__ import annotations

from pydantic import Field

from postmesh.common.config import ServiceSettings


class DeliverySettings(ServiceSettings):
    ops_port: int = Field(default=9104, ge=0, le=65535)
    # Kafka consumer group: all delivery replicas share it, so partitions are split among them.
    delivery_group: str = "postmesh-delivery"
    # Inbound records handled at once per fetched batch (each recipient's Deliver is
    # idempotent and records are independent, so order does not matter).
    delivery_concurrency: int = Field(default=16, ge=1, le=256)
