"""Session-scoped pytest fixtures for real Kafka and FerretDB.

Import them into a conftest.py so pytest registers them:

    from tests.integration.infra.fixtures import ferretdb, kafka_broker  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.infra.ferretdb import FerretDB
from tests.integration.infra.kafka import POSTMESH_TOPICS, KafkaBroker


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """One KRaft broker for the session, with the postmesh.* topics already created."""
    with KafkaBroker() as broker:
        broker.create_topics(POSTMESH_TOPICS)
        yield broker


@pytest.fixture(scope="session")
def ferretdb() -> Iterator[FerretDB]:
    """One FerretDB (SQLite backend) for the session; tests should use their own database."""
    with FerretDB() as server:
        yield server
