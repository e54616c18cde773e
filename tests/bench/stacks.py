"""The whole system for a bench: six services on the embedded backends, or on a real Kafka and
FerretDB on PostgreSQL from the integration infra (``distributed``), set up as docs/operations.md
tells an operator to (the store's GIN indexes created)."""

from __future__ import annotations

import contextlib
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
            stack = start_stack(Path(tmp), env)
            try:
                # The operator's step for FerretDB on PostgreSQL (docs/operations.md, ADR 36):
                # GIN indexes for the collections the store made at its start.
                mongo.sql(pg_indexes.sql(env["POSTMESH_MONGODB_DATABASE"]))
                yield stack
            finally:
                stack.stop()
