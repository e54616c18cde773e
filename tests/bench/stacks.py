"""The whole system for a bench: six services on the embedded backends, or on a real Kafka and
FerretDB on PostgreSQL from the integration infra (``distributed``), set up as docs/operations.md
tells an operator to (the store's GIN indexes created)."""

from __future__ import annotations

import contextlib
import imaplib
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from postmesh.common.devstack import Stack
from tests.integration.stack import embedded_env, start_stack


@contextlib.contextmanager
def bench_stack(backend: str) -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="postmesh-bench-") as tmp:
        if backend == "embedded":
            stack = start_stack(Path(tmp), embedded_env())
            try:
                yield stack
            finally:
                stack.stop()
            return
        from postmesh.store.mongodb import pg_indexes
        from tests.integration.infra import FerretDB, KafkaBroker
        from tests.integration.stack import distributed_env

        with KafkaBroker() as kafka, FerretDB(fsync=True) as mongo:
            kafka.create_topics()
            env = distributed_env(kafka, mongo)
            stack = start_stack(Path(tmp), env, local_grpc=False)  # as between pods
            try:
                # The operator's step for FerretDB on PostgreSQL (docs/operations.md, ADR 36):
                # GIN indexes for the collections the store made at its start.
                mongo.sql(pg_indexes.sql(env["POSTMESH_MONGODB_DATABASE"]))
                yield stack
            finally:
                stack.stop()


_MESSAGES = re.compile(rb"\(MESSAGES (\d+)\)")


def inbox_count(port: int, user: str, password: str) -> int:
    """INBOX's message count by IMAP STATUS, as a client polls a folder for new mail. Not
    SELECT: that lists every message, and the benches poll 20 times a second while the
    mailbox grows to thousands, which loaded the store under measurement (and FerretDB and
    PostgreSQL on the distributed stack) far more than counting the other side's Maildir
    costs Postfix."""
    with imaplib.IMAP4("127.0.0.1", port) as m:
        m.login(user, password)  # loopback: plaintext LOGIN is allowed (ADR 4)
        _, data = m.status("INBOX", "(MESSAGES)")
        found = _MESSAGES.search(data[0] if isinstance(data[0], bytes) else b"")
        if found is None:
            raise RuntimeError(f"STATUS without MESSAGES: {data!r}")
        return int(found.group(1))
