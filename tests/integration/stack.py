"""The whole Postmesh system for integration tests: six real service processes on free loopback
ports, on the embedded backends or on real Kafka + FerretDB."""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families

from postmesh.common.devstack import Stack, StackPorts
from tests.integration.infra import FerretDB, KafkaBroker, free_port

T = TypeVar("T")


def free_stack_ports() -> StackPorts:
    ports = StackPorts()
    for name in (
        "smtp_mx",
        "smtp_submission",
        "smtp_submissions",
        "imap",
        "imaps",
        "pop3",
        "pop3s",
        "admin",
        "queue_admin",
        "store_grpc",
        "auth_grpc",
    ):
        setattr(ports, name, free_port())
    ports.ops = {svc: free_port() for svc in ports.ops}
    return ports


def embedded_env() -> dict[str, str]:
    return {
        "POSTMESH_BUS": "sqlite",
        "POSTMESH_STORE_BACKEND": "sqlite",
        "POSTMESH_AUTH_BACKEND": "sqlite",
    }


def distributed_env(kafka: KafkaBroker, mongo: FerretDB) -> dict[str, str]:
    return {
        "POSTMESH_BUS": "kafka",
        "POSTMESH_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "POSTMESH_STORE_BACKEND": "mongodb",
        "POSTMESH_AUTH_BACKEND": "mongodb",
        "POSTMESH_MONGODB_URL": mongo.url,
        # A database per stack: tests sharing one FerretDB never see each other's data.
        "POSTMESH_MONGODB_DATABASE": "pm_" + uuid.uuid4().hex[:12],
    }


def quick_env() -> dict[str, str]:
    """Settings that keep tests quick without changing behaviour under test."""
    return {
        "POSTMESH_LOG_LEVEL": "INFO",
        "POSTMESH_SMTP_AUTH_FAILURE_DELAY_SECONDS": "0",
        "POSTMESH_IMAP_AUTH_FAILURE_DELAY_SECONDS": "0",
        "POSTMESH_POP3_AUTH_FAILURE_DELAY_SECONDS": "0",
        # auth's shared back-off (lockout itself stays on, with its default thresholds).
        "POSTMESH_AUTH_BACKOFF_BASE_SECONDS": "0",
    }


def start_stack(data_dir: Path, backend_env: Mapping[str, str], local_grpc: bool = True) -> Stack:
    """``local_grpc=False``: store and auth on loopback TCP with mutual TLS, as between pods
    (the distributed stacks); else on Unix sockets, as ``make run`` (ADR 0073)."""
    stack = Stack(
        data_dir, free_stack_ports(), {**quick_env(), **backend_env}, local_grpc=local_grpc
    )
    stack.start(timeout=90)
    return stack


def wait_for(probe: Callable[[], T | None], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something other than None (mail is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def ops_samples(ops_port: int, sample: str, **labels: str) -> list[float]:
    """The values of a service's /metrics samples named ``sample`` whose labels include
    ``labels`` (none if the series does not exist yet)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{ops_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == sample and labels.items() <= s.labels.items()
    ]


def ops_metric(ops_port: int, sample: str, **labels: str) -> float:
    """The sum of ``ops_samples`` (0 if there are none)."""
    return sum(ops_samples(ops_port, sample, **labels))
