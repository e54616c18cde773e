"""Pick the bus the settings name."""

from __future__ import annotations

from postmesh.common import topics
from postmesh.common.bus.base import Bus
from postmesh.common.config import ServiceSettings


def create_bus(settings: ServiceSettings, client_id: str) -> Bus:
    if settings.bus == "kafka":
        from postmesh.common.bus.kafka import KafkaBus
        from postmesh.common.bus.kafka_security import KafkaSecurity

        return KafkaBus(
            settings.kafka_bootstrap_servers,
            client_id,
            create_topics=topics.ALL,
            topic_prefix=settings.kafka_topic_prefix,
            security=KafkaSecurity.from_settings(settings),
        )
    from postmesh.common.bus.sqlite import OWN_FILE_TOPICS, SqliteBus

    return SqliteBus(settings.data_path(settings.bus_sqlite_path), OWN_FILE_TOPICS)
