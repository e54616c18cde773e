"""Pytest fixtures for real Kafka and FerretDB (session-scoped), dnsmasq and Postfix peers.

Import them into a conftest.py so pytest registers them:

    from tests.integration.infra.fixtures import ferretdb, kafka_broker  # noqa: F401
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from postmesh.common.dev_pki import ensure_server_cert
from tests.integration.infra.dnsmasq import Dnsmasq, Zone
from tests.integration.infra.ferretdb import FerretDB
from tests.integration.infra.kafka import POSTMESH_TOPICS, KafkaBroker, SaslSslListener
from tests.integration.infra.postfix_peer import PostfixPeer

# The user of the session broker's SASL_SSL listener (its password is random per session).
KAFKA_SASL_USER = "postmesh"


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """One KRaft broker for the session, with the postmesh.* topics already created: a
    PLAINTEXT listener, and a SASL_SSL one (SCRAM user KAFKA_SASL_USER, a server certificate
    from a throwaway CA, ``broker.sasl_ssl.ca_file``) as a managed Kafka offers."""
    with sasl_ssl_kafka(Path(tmp_path_factory.mktemp("kafka-pki"))) as broker:
        yield broker


@contextlib.contextmanager
def sasl_ssl_kafka(pki: Path) -> Iterator[KafkaBroker]:
    """A KRaft broker with the postmesh.* topics, a PLAINTEXT listener and a SASL_SSL one
    (SCRAM user KAFKA_SASL_USER with a random password, a server certificate from a
    throwaway CA in ``pki``)."""
    cert = ensure_server_cert(pki, "kafka", ["localhost"], ["127.0.0.1"])
    listener = SaslSslListener(
        cert.cert, cert.key, cert.ca, {KAFKA_SASL_USER: secrets.token_urlsafe(18)}
    )
    with KafkaBroker(sasl_ssl=listener) as broker:
        broker.create_topics(POSTMESH_TOPICS)
        yield broker


@pytest.fixture(scope="session")
def ferretdb() -> Iterator[FerretDB]:
    """One FerretDB for the session (on PostgreSQL unless POSTMESH_TEST_FERRETDB_HANDLER says
    sqlite); tests should use their own database."""
    with FerretDB() as server:
        yield server


@pytest.fixture(scope="module")
def dnsmasq() -> Iterator[Callable[[Zone], Dnsmasq]]:
    """Start a dnsmasq serving a zone: ``dns = dnsmasq(Zone(mx=[...], a=[...]))``; stopped at
    the end of the module."""
    started: list[Dnsmasq] = []

    def start(zone: Zone) -> Dnsmasq:
        started.append(Dnsmasq(zone).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def postfix_peer() -> Iterator[Callable[..., PostfixPeer]]:
    """Start a Postfix accepting mail for some domains on 127.0.0.1:port into a Maildir:
    ``postfix_peer(port, ["ok.test"], slow_domains=("slow.test",))``."""
    started: list[PostfixPeer] = []

    def start(port: int, domains: list[str], **kw: Any) -> PostfixPeer:
        started.append(PostfixPeer(port, domains, **kw).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()
