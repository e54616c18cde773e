"""Real infrastructure for integration tests: Apache Kafka (KRaft) and FerretDB on loopback.

Binaries come from a cache outside the clone (``${POSTMESH_CACHE:-~/.cache/postmesh}``), filled
once by ``scripts/infra/fetch-*.sh``. Each server runs as a child process in its own temp dir and
is stopped (that process only) when its context manager exits.
"""

from tests.integration.infra.ferretdb import FerretDB
from tests.integration.infra.kafka import POSTMESH_TOPICS, KafkaBroker, SaslSslListener
from tests.integration.infra.ports import free_port

__all__ = ["POSTMESH_TOPICS", "FerretDB", "KafkaBroker", "SaslSslListener", "free_port"]
