from __future__ import annotations

from pydantic import Field

from postmesh.common.config import ServiceSettings


class DeliverySettings(ServiceSettings):
    ops_port: int = Field(default=9104, ge=0, le=65535)
    # Kafka consumer group: all delivery replicas share it, so partitions are split among them.
    delivery_group: str = "postmesh-delivery"
