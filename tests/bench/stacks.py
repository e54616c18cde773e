"""The whole system for a bench: six services on the embedded backends, or on a real Kafka and
FerretDB from the integration infra (``distributed``)."""

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
        from tests.integration.infra import FerretDB, KafkaBroker
        from tests.integration.stack import distributed_env

        with KafkaBroker() as kafka, FerretDB(fsync=True) as mongo:
            kafka.create_topics()
            stack = start_stack(Path(tmp), distributed_env(kafka, mongo))
            try:
                yield stack
            finally:
                stack.stop()
