"""Integration fixtures: real Kafka, real FerretDB, and the whole system on top of them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# The shared contract suites' asserts report their operands too; registered here, before any
# test module imports one (a module registering only its own suite could come too late).
pytest.register_assert_rewrite(
    "postmesh.store.contract_suite",
    "postmesh.store.queue.contract_suite",
    "postmesh.auth.repository.token_contract",
)

from postmesh.common.devstack import Stack  # noqa: E402
from tests.integration.infra import FerretDB, KafkaBroker  # noqa: E402
from tests.integration.infra.dnsmasq import Dnsmasq, Zone  # noqa: E402
from tests.integration.stack import distributed_env, embedded_env, start_stack  # noqa: E402

# Session fixtures `kafka_broker` and `ferretdb`: real servers on loopback.
pytest_plugins = ["tests.integration.infra.fixtures"]


def _dump_logs(stack: Stack) -> None:
    for svc in stack.procs:
        print(f"----- {svc} log tail -----\n{stack.log_tail(svc, 40)}")


@pytest.fixture(scope="session")
def quiet_dns() -> Iterator[dict[str, str]]:
    """A loopback DNS server for the shared stacks. Without one, the MX's SPF/DKIM/DMARC
    lookups and delivery's MX lookups would go to the machine's resolver; tests send traffic
    to loopback only. Names in its zones are NXDOMAIN, any other name is refused."""
    with Dnsmasq(Zone(zones=["test", "example", "org", "com", "net", "invalid"])) as dns:
        yield {"POSTMESH_DNS_SERVERS": dns.servers}


@pytest.fixture(scope="session")
def embedded_stack(
    tmp_path_factory: pytest.TempPathFactory, quiet_dns: dict[str, str]
) -> Iterator[Stack]:
    stack = start_stack(Path(tmp_path_factory.mktemp("embedded")), {**embedded_env(), **quiet_dns})
    yield stack
    _dump_logs(stack)
    stack.stop()


@pytest.fixture(scope="session")
def distributed_stack(
    tmp_path_factory: pytest.TempPathFactory,
    kafka_broker: KafkaBroker,
    ferretdb: FerretDB,
    quiet_dns: dict[str, str],
) -> Iterator[Stack]:
    stack = start_stack(
        Path(tmp_path_factory.mktemp("distributed")),
        {**distributed_env(kafka_broker, ferretdb), **quiet_dns},
        local_grpc=False,
    )
    yield stack
    _dump_logs(stack)
    stack.stop()


@pytest.fixture(params=["embedded", "distributed"])
def stack(request: pytest.FixtureRequest) -> Stack:
    """Runs a test once on the embedded backends and once on Kafka + FerretDB."""
    return request.getfixturevalue(f"{request.param}_stack")  # type: ignore[no-any-return]
