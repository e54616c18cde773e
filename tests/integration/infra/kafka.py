"""A real single-node Apache Kafka (KRaft, broker+controller) on 127.0.0.1 for tests."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.infra import _process
from tests.integration.infra._process import InfraError, LocalServer
from tests.integration.infra.ports import free_port, port_open

DEFAULT_VERSION = os.environ.get("KAFKA_VERSION", "3.9.1")

# The topics of docs/architecture.md and their partition counts for tests.
POSTMESH_TOPICS: Mapping[str, int] = {
    "postmesh.inbound": 3,
    "postmesh.mailbox-events": 3,
    "postmesh.delivery-events": 3,
}

# Kafka's bin scripts default to -Xmx1G plus G1 tuning; a test broker needs far less. It also
# lives for minutes on two cores shared with the services under test: C2's compiles never pay
# back there (~1 ms of CPU per delivered message in the bench's 400-message rounds, still
# compiling in the third), so only C1 compiles, and the serial collector runs no concurrent
# GC threads beside the services (ADR 63). A production broker runs for weeks: the JDK's
# defaults suit it, and it is the operator's.
DEFAULT_JVM_ARGS: tuple[str, ...] = (
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
)

_LOG4J = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.controller=INFO
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
"""


@dataclass(frozen=True)
class SaslSslListener:
    """A second client listener as a managed Kafka offers it: TLS with a server certificate
    (PEM, PKCS#8 key) and SASL SCRAM-SHA-512/256 users made at format time (KRaft keeps SCRAM
    credentials in its metadata log). The PLAINTEXT listener stays for the broker's own use and
    for tests that do not care."""

    cert_file: Path
    key_file: Path
    # The CA that signed cert_file, for clients.
    ca_file: Path
    # user -> password; each gets SCRAM-SHA-512 and SCRAM-SHA-256 credentials.
    users: Mapping[str, str] = field(default_factory=dict)


def _kafka_uuid() -> str:
    """A random cluster id in Kafka's format (base64url, no padding; never starts with '-')."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class KafkaBroker(LocalServer):
    """Single-node KRaft Kafka as a child process; use as a (sync or async) context manager.

    >>> with KafkaBroker() as kafka:
    ...     kafka.create_topics()
    ...     producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
    """

    def __init__(
        self,
        libs_dir: Path | str | None = None,
        *,
        version: str = DEFAULT_VERSION,
        java: str = "java",
        jvm_args: tuple[str, ...] = DEFAULT_JVM_ARGS,
        extra_properties: Mapping[str, str] | None = None,
        startup_timeout_s: float = 90.0,
        stop_timeout_s: float = 30.0,
        sasl_ssl: SaslSslListener | None = None,
    ) -> None:
        self.sasl_ssl = sasl_ssl
        self.sasl_ssl_port = 0
        self._libs_dir = Path(libs_dir) if libs_dir is not None else None
        self.version = version
        self._java = java
        self._jvm_args = jvm_args
        self._extra = dict(extra_properties or {})
        self._startup_timeout_s = startup_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self.port = 0
        self.controller_port = 0

    # -- public surface -------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        if not self.port:
            raise InfraError("KafkaBroker is not started")
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_ssl_bootstrap_servers(self) -> str:
        if not self.sasl_ssl_port:
            raise InfraError("KafkaBroker has no SASL_SSL listener (or is not started)")
        return f"127.0.0.1:{self.sasl_ssl_port}"

    @property
    def log_path(self) -> Path:
        if self._tmp is None:
            raise InfraError("KafkaBroker is not started")
        return self._tmp / "kafka.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> KafkaBroker:
        if self._proc is not None:
            raise InfraError("KafkaBroker already started")
        libs = self._libs_dir or _process.run_fetch_script("fetch-kafka.sh", self.version)
        if not any(libs.glob("kafka_2.13-*.jar")):
            raise InfraError(f"no kafka_2.13 jar in {libs}")
        if shutil.which(self._java) is None:
            raise InfraError(f"'{self._java}' not found on PATH (Kafka needs Java 17+)")
        self._tmp = Path(tempfile.mkdtemp(prefix="postmesh-kafka-"))
        try:
            self._launch(libs)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the broker we started (SIGTERM, then SIGKILL) and delete its temp dir."""
        if self._proc is not None:
            _process.stop_process(self._proc, self._stop_timeout_s)
            self._proc = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self.port = self.controller_port = self.sasl_ssl_port = 0

    def create_topics(self, topics: Mapping[str, int] | None = None) -> None:
        """Create topics (name -> partition count, replication 1); existing ones are kept.

        Returns once every partition has a leader, so producers can use them at once.
        """
        _process.run_blocking(self.create_topics_async(topics))

    def uncommitted(self, group: str, topic: str) -> int:
        """Records of ``topic`` past consumer group ``group``'s committed offsets: 0 once the
        group has handled (and committed, which comes after handling) everything published."""
        return int(_process.run_blocking(self._uncommitted(group, topic)))

    async def _uncommitted(self, group: str, topic: str) -> int:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap_servers)
        await admin.start()
        await reader.start()
        try:
            committed = await admin.list_consumer_group_offsets(group)
            [described] = await admin.describe_topics([topic])
            parts = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
            ends = await reader.end_offsets(parts)
            return sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in parts)
        finally:
            await reader.stop()
            await admin.close()

    async def create_topics_async(self, topics: Mapping[str, int] | None = None) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        wanted = dict(POSTMESH_TOPICS if topics is None else topics)
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        await admin.start()
        try:
            response = await admin.create_topics(
                [NewTopic(name, parts, 1) for name, parts in wanted.items()]
            )
            for name, code, *rest in response.topic_errors:
                # 36 = TOPIC_ALREADY_EXISTS: creating is idempotent for tests.
                if code not in (0, 36):
                    raise InfraError(f"creating topic {name} failed: error {code} {rest}")
            deadline = time.monotonic() + 30
            while not await self._all_have_leaders(admin, wanted):
                if time.monotonic() > deadline:
                    raise InfraError(f"topics {sorted(wanted)} got no leaders within 30 s")
                await asyncio.sleep(0.1)
        finally:
            await admin.close()

    def _properties(self) -> dict[str, str]:
        assert self._tmp is not None
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self._tmp / "data"),
            "num.partitions": "3",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            # Fewer internal partitions: the first consumer group / transaction starts faster.
            "offsets.topic.num.partitions": "5",
            "transaction.state.log.num.partitions": "5",
            "group.initial.rebalance.delay.ms": "0",
            # Two cores on CI machines: keep the thread pools small.
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
        }
        if self.sasl_ssl is not None:
            props.update(self._sasl_ssl_properties(self.sasl_ssl))
        props.update(self._extra)
        return props

    def _sasl_ssl_properties(self, listener: SaslSslListener) -> dict[str, str]:
        assert self._tmp is not None
        # Kafka's PEM key store (KIP-651) wants the key and its certificate chain in one file.
        keystore = self._tmp / "sasl-ssl-keystore.pem"
        keystore.write_text(listener.key_file.read_text() + listener.cert_file.read_text())
        keystore.chmod(0o600)
        name = "listener.name.sasl_ssl"
        jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return {
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port},"
                f"SASL_SSL://127.0.0.1:{self.sasl_ssl_port}"
            ),
            "advertised.listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},SASL_SSL://127.0.0.1:{self.sasl_ssl_port}"
            ),
            "listener.security.protocol.map": (
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL"
            ),
            f"{name}.sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256",
            f"{name}.scram-sha-512.sasl.jaas.config": jaas,
            f"{name}.scram-sha-256.sasl.jaas.config": jaas,
            f"{name}.ssl.keystore.type": "PEM",
            f"{name}.ssl.keystore.location": str(keystore),
            # Every authenticated user may do everything (no authorizer): the test is about
            # authentication and encryption, not ACLs.
        }

    def _java_cmd(self, libs: Path, main: str, *args: str) -> list[str]:
        assert self._tmp is not None
        return [
            self._java,
            *self._jvm_args,
            f"-Dlog4j.configuration=file:{self._tmp / 'log4j.properties'}",
            f"-Dkafka.logs.dir={self._tmp / 'logs'}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def _launch(self, libs: Path) -> None:
        assert self._tmp is not None
        self.port, self.controller_port = free_port(), free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        if self.sasl_ssl is not None:
            self.sasl_ssl_port = free_port()
            while self.sasl_ssl_port in (self.port, self.controller_port):
                self.sasl_ssl_port = free_port()
        config = self._tmp / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in self._properties().items()))
        (self._tmp / "log4j.properties").write_text(_LOG4J)
        log = self._tmp / "kafka.log"

        # Format the metadata log once: KRaft refuses to start on an unformatted log dir.
        # SCRAM users go in here too (KIP-900), before the broker exists to take kafka-configs.
        scram: list[str] = []
        for user, password in (self.sasl_ssl.users if self.sasl_ssl else {}).items():
            for mech in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
                scram += ["--add-scram", f"{mech}=[name={user},password={password}]"]
        format_args = ["format", "-t", _kafka_uuid(), "-c", str(config), *scram]
        fmt = subprocess.run(
            self._java_cmd(libs, "kafka.tools.StorageTool", *format_args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if fmt.returncode != 0:
            raise InfraError(
                f"kafka StorageTool format failed (exit {fmt.returncode}):\n"
                f"{_process.tail_text(fmt.stdout + fmt.stderr)}"
            )

        with log.open("wb") as out:
            self._proc = subprocess.Popen(
                self._java_cmd(libs, "kafka.Kafka", str(config)),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self._tmp,
                # Own process group: a Ctrl-C at the terminal reaches pytest, whose teardown
                # then stops the broker cleanly instead of both dying at once.
                start_new_session=True,
            )
        _process.register(self._proc)

    def _wait_ready(self) -> None:
        assert self._proc is not None

        def probe() -> str | None:
            if not port_open("127.0.0.1", self.port):
                return f"nothing listens on {self.bootstrap_servers} yet"
            if _process.run_blocking(self._metadata_ok()):
                return None
            return "metadata lists no broker yet"

        _process.wait_ready(self._proc, "Kafka", self._startup_timeout_s, self.log_path, probe)

    async def _metadata_ok(self) -> bool:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers, request_timeout_ms=5000
        )
        try:
            await asyncio.wait_for(admin.start(), 10)
            cluster: dict[str, Any] = await asyncio.wait_for(admin.describe_cluster(), 10)
            return bool(cluster.get("brokers")) and cluster.get("controller_id", -1) >= 0
        finally:
            await admin.close()

    @staticmethod
    async def _all_have_leaders(admin: Any, wanted: Mapping[str, int]) -> bool:
        described: list[dict[str, Any]] = await admin.describe_topics(list(wanted))
        for topic in described:
            partitions = topic.get("partitions", [])
            if topic.get("error_code", 0) != 0 or len(partitions) < wanted[topic["topic"]]:
                return False
            if any(p.get("leader", -1) < 0 for p in partitions):
                return False
        return len(described) == len(wanted)
