"""The repository contract, written once and run against every backend.

A test module subclasses :class:`StoreContract` and provides an async ``repo`` fixture yielding
an opened :class:`StoreRepository` with empty storage:

    class TestSqliteStore(StoreContract):
        @pytest.fixture
        async def repo(self, tmp_path): ...

It lives in the package (not in a tests/ directory) so that the unit tests
(services/store/tests) and the integration tests (tests/integration, real FerretDB) import it by
its module name under ``pytest --import-mode=importlib``, which puts no test directory on
sys.path. The class name does not start with "Test", so pytest collects it only through
subclasses. Call ``pytest.register_assert_rewrite("postmesh.store.contract_suite")`` before
importing it to get pytest's detailed assertion messages.
"""

from postmesh.store.contract_suite.delivery import DeliveryContract
from postmesh.store.contract_suite.helpers import (
    MiB,
    content_of,
    deliver,
    expunge_uids,
    message,
    random_bytes,
    stream,
)
from postmesh.store.contract_suite.janitor import JanitorContract
from postmesh.store.contract_suite.mailboxes import MailboxContract
from postmesh.store.contract_suite.messages import MessageContract
from postmesh.store.contract_suite.quotas import QuotaContract
from postmesh.store.contract_suite.search import SearchContract


class StoreContract(
    DeliveryContract,
    JanitorContract,
    MailboxContract,
    MessageContract,
    QuotaContract,
    SearchContract,
):
    """Behaviour every StoreRepository backend must show. Subclasses provide ``repo``."""


__all__ = [
    "MiB",
    "StoreContract",
    "content_of",
    "deliver",
    "expunge_uids",
    "message",
    "random_bytes",
    "stream",
]
