"""The whole system on a Kafka that demands SASL_SSL (SCRAM-SHA-512, a server certificate from a
throwaway CA) and a FerretDB that demands TLS and a PostgreSQL user's password, as a managed
Kafka and MongoDB would: mail goes through, a wrong password or a missing TLS is refused with a
message naming the bus or the database, and no password or token used ever shows in a log line
or a /metrics page (docs/adr/0032-secrets-of-the-bus-and-database-connections.md)."""

from __future__ import annotations

import imaplib
import secrets
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from postmesh.common.dev_pki import ensure_server_cert
from postmesh.common.devstack import SERVICES, Stack
from tests.integration.infra import FerretDB, KafkaBroker, free_port
from tests.integration.infra.fixtures import KAFKA_SASL_USER, sasl_ssl_kafka
from tests.integration.stack import start_stack, wait_for
from tests.integration.test_mail_end_to_end import insecure_tls, sample_message, submit

MONGO_USER = "pmstore"


class Secrets:
    """Every password and token this module hands to the system; none may be logged."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def new(self, what: str) -> str:
        value = secrets.token_urlsafe(18)
        self.values[what] = value
        return value


@pytest.fixture(scope="module")
def used() -> Secrets:
    return Secrets()


@pytest.fixture(scope="module")
def secure_ferretdb(
    tmp_path_factory: pytest.TempPathFactory, used: Secrets
) -> Iterator[tuple[FerretDB, Path]]:
    """A FerretDB with a TLS listener (certificate from a throwaway CA) on a PostgreSQL that
    checks MONGO_USER's password; returns it and the CA file."""
    pki = Path(tmp_path_factory.mktemp("mongo-pki"))
    cert = ensure_server_cert(pki, "ferretdb", ["localhost"], ["127.0.0.1"])
    password = used.new("mongodb password")
    with FerretDB(
        tls_cert_file=cert.cert, tls_key_file=cert.key, users={MONGO_USER: password}
    ) as db:
        yield db, cert.ca


def _secret_file(directory: Path, name: str, value: str) -> Path:
    path = directory / name
    path.write_text(value + "\n")  # as `kubectl create secret --from-file` of an edited file
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A broker of this module's own: the stack's services use the same topic and group names
    as the session's distributed stack, and on one broker the two would split the partitions
    (a message published here could be delivered by the other stack's delivery)."""
    with sasl_ssl_kafka(Path(tmp_path_factory.mktemp("own-kafka-pki"))) as broker:
        yield broker


@pytest.fixture(scope="module")
def secure_stack(
    tmp_path_factory: pytest.TempPathFactory,
    own_kafka: KafkaBroker,
    secure_ferretdb: tuple[FerretDB, Path],
    quiet_dns: dict[str, str],
    used: Secrets,
) -> Iterator[Stack]:
    db, mongo_ca = secure_ferretdb
    kafka_broker = own_kafka
    assert kafka_broker.sasl_ssl is not None
    kafka_password = kafka_broker.sasl_ssl.users[KAFKA_SASL_USER]
    used.values["kafka password"] = kafka_password
    root = Path(tmp_path_factory.mktemp("secure"))
    mounted = root / "secrets"
    mounted.mkdir()
    env = {
        "POSTMESH_BUS": "kafka",
        "POSTMESH_KAFKA_BOOTSTRAP_SERVERS": kafka_broker.sasl_ssl_bootstrap_servers,
        "POSTMESH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "POSTMESH_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "POSTMESH_KAFKA_USERNAME": KAFKA_SASL_USER,
        "POSTMESH_KAFKA_PASSWORD_FILE": str(_secret_file(mounted, "kafka", kafka_password)),
        "POSTMESH_KAFKA_TLS_CA_FILE": str(kafka_broker.sasl_ssl.ca_file),
        "POSTMESH_STORE_BACKEND": "mongodb",
        "POSTMESH_AUTH_BACKEND": "mongodb",
        # FerretDB 1.x takes PLAIN only, and passes the credentials on to PostgreSQL.
        "POSTMESH_MONGODB_URL": db.tls_url("authMechanism=PLAIN&directConnection=true"),
        "POSTMESH_MONGODB_USERNAME": MONGO_USER,
        "POSTMESH_MONGODB_PASSWORD_FILE": str(
            _secret_file(mounted, "mongo", used.values["mongodb password"])
        ),
        "POSTMESH_MONGODB_TLS_CA_FILE": str(mongo_ca),
        "POSTMESH_MONGODB_DATABASE": "pm_" + uuid.uuid4().hex[:12],
        **quiet_dns,
    }
    stack = start_stack(root / "stack", env)
    used.values["admin token"] = stack.admin_token()
    yield stack
    stack.stop()


def test_mail_goes_through_sasl_ssl_kafka_and_tls_mongodb(
    secure_stack: Stack, used: Secrets
) -> None:
    user = f"tls-{uuid.uuid4().hex[:8]}@secure.test"
    password = used.new("user password")
    secure_stack.ensure_user(user, password)
    marker = uuid.uuid4().hex
    message = sample_message(user, user, marker)
    submit(secure_stack, user, password, message)

    with (
        imaplib.IMAP4_SSL(
            "127.0.0.1", secure_stack.ports.imaps, ssl_context=insecure_tls(), timeout=30
        ) as imap,
        pytest.raises(imaplib.IMAP4.error),
    ):
        imap.login(user, used.new("wrong user password"))
    with imaplib.IMAP4_SSL(
        "127.0.0.1", secure_stack.ports.imaps, ssl_context=insecure_tls(), timeout=30
    ) as imap:
        imap.login(user, password)

        def found() -> bytes | None:
            imap.select("INBOX")
            _, data = imap.search(None, "HEADER", "Message-ID", f"<{marker}@example.test>")
            return data[0] or None

        uid = wait_for(found, 60, "the message in INBOX").split()[0]
        _, fetched = imap.fetch(uid.decode(), "(BODY.PEEK[])")
        body = fetched[0]
        assert isinstance(body, tuple)
        assert body[1].endswith(message)


def run_until_exit(
    stack: Stack,
    service: str,
    name: str,
    changes: Mapping[str, str],
    removed: tuple[str, ...] = (),
    timeout: float = 90.0,
) -> tuple[int, str]:
    """Start one more process of ``service`` with the stack's settings changed and wait for it
    to exit (it must: its dependency refuses it). Its log goes beside the stack's."""
    env = {k: v for k, v in stack.env_for(service).items() if k not in removed}
    env.update(changes)
    env["POSTMESH_OPS_PORT"] = str(free_port())
    log = stack.log_dir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "postmesh." + service.replace("-", "_")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    return proc.returncode, log.read_text(errors="replace")


@pytest.mark.parametrize(
    ("case", "changes", "reason"),
    [
        ("kafka-wrong-password", {"POSTMESH_KAFKA_PASSWORD_FILE": "wrong"}, "invalid credentials"),
        # SCRAM over a plaintext socket to the TLS listener: the broker drops it unanswered.
        (
            "kafka-no-tls",
            {"POSTMESH_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"},
            "closed",
        ),
    ],
)
def test_the_bus_refuses_a_wrong_password_or_no_tls_and_delivery_says_so(
    secure_stack: Stack, used: Secrets, case: str, changes: dict[str, str], reason: str
) -> None:
    changes = dict(changes)
    if changes.get("POSTMESH_KAFKA_PASSWORD_FILE") == "wrong":
        wrong = used.new("wrong kafka password")
        changes["POSTMESH_KAFKA_PASSWORD_FILE"] = str(
            _secret_file(secure_stack.data_dir, "wrong-kafka", wrong)
        )
    changes["POSTMESH_QUEUE_ADMIN_PORT"] = str(free_port())
    code, log = run_until_exit(secure_stack, "delivery", f"delivery-{case}", changes)
    assert code == 1, log
    assert "service could not start" in log and "the Kafka bus at" in log, log
    assert reason in log, log
    assert "Traceback" not in log, log


@pytest.mark.parametrize("case", ["mongodb-wrong-password", "mongodb-no-tls"])
def test_mongodb_refuses_a_wrong_password_or_no_tls_and_the_store_says_so(
    secure_stack: Stack, secure_ferretdb: tuple[FerretDB, Path], used: Secrets, case: str
) -> None:
    db, _ = secure_ferretdb
    changes = {"POSTMESH_STORE_LISTEN": f"127.0.0.1:{free_port()}"}
    removed: tuple[str, ...] = ()
    if case == "mongodb-wrong-password":
        # The whole URL from a Secret file, credentials in it.
        wrong = used.new("wrong mongodb password")
        url = db.tls_url("authMechanism=PLAIN&directConnection=true").replace(
            "mongodb://", f"mongodb://{MONGO_USER}:{wrong}@"
        )
        changes["POSTMESH_MONGODB_URL_FILE"] = str(
            _secret_file(secure_stack.data_dir, "wrong-mongo-url", url)
        )
        removed = ("POSTMESH_MONGODB_USERNAME", "POSTMESH_MONGODB_PASSWORD_FILE")
        reason = "password authentication failed"
    else:
        removed = ("POSTMESH_MONGODB_TLS_CA_FILE",)
        reason = "ServerSelectionTimeoutError"
    code, log = run_until_exit(secure_stack, "store", f"store-{case}", changes, removed)
    assert code == 1, log
    assert "service could not start" in log and "MongoDB at mongodb://" in log, log
    assert reason in log, log
    assert "Traceback" not in log, log


def test_no_password_or_token_in_any_log_line_or_metric(secure_stack: Stack, used: Secrets) -> None:
    """Runs last in this module: every secret the tests above used, in every log of the stack
    (its six services and the refused processes) and every service's /metrics."""
    assert {"kafka password", "mongodb password", "admin token"} <= set(used.values)
    pages = {}
    for svc in SERVICES:
        port = secure_stack.ports.ops[svc]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            pages[svc] = resp.read().decode()
    secure_stack.stop()  # the shutdown lines are part of the run's logs too
    logs = {p.name: p.read_text(errors="replace") for p in secure_stack.log_dir.glob("*.log")}
    assert {f"{svc}.log" for svc in SERVICES} <= set(logs)
    assert sum(len(t) for t in logs.values()) > 1000, "the logs hold hardly anything"
    leaks = [
        f"{what} in {where}"
        for what, value in used.values.items()
        for where, text in {**logs, **{f"{s} /metrics": p for s, p in pages.items()}}.items()
        if value in text
    ]
    assert not leaks, leaks
    print(
        f"checked {len(used.values)} secrets ({', '.join(sorted(used.values))}) against "
        f"{len(logs)} logs ({sum(len(t) for t in logs.values())} bytes) and "
        f"{len(pages)} /metrics pages"
    )
