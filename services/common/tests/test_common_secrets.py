"""Secrets of the Kafka and MongoDB connections: from env or files, never in a dump or error."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest

from postmesh.common.bus.kafka_security import KafkaSecurity
from postmesh.common.config import ServiceSettings, load_settings
from postmesh.common.dev_pki import ensure_dev_pki
from postmesh.common.mongo import MongoSettings
from postmesh.common.secrets import redact_url

PASSWORD = "kafka-Pa55-word-never-shown"
MONGO_PASSWORD = "mongo-Pa55-word-never-shown"


def test_kafka_password_is_hidden_in_repr_and_dumps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTMESH_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("POSTMESH_KAFKA_USERNAME", "postmesh")
    monkeypatch.setenv("POSTMESH_KAFKA_PASSWORD", PASSWORD)
    s = load_settings(ServiceSettings)
    for text in (repr(s), str(s), s.model_dump_json(), str(s.model_dump())):
        assert PASSWORD not in text
    sec = KafkaSecurity.from_settings(s)
    assert PASSWORD not in repr(sec) and PASSWORD not in sec.describe()
    kw = sec.client_kwargs()
    assert kw["security_protocol"] == "SASL_PLAINTEXT"
    assert (kw["sasl_mechanism"], kw["sasl_plain_username"]) == ("SCRAM-SHA-512", "postmesh")
    assert kw["sasl_plain_password"] == PASSWORD
    assert "ssl_context" not in kw


def test_kafka_password_file_is_read_at_each_client(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    monkeypatch.setenv("POSTMESH_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("POSTMESH_KAFKA_USERNAME", "postmesh")
    monkeypatch.setenv("POSTMESH_KAFKA_PASSWORD_FILE", str(secret))
    ca = ensure_dev_pki(tmp_path / "pki", ["store"])["store"].ca
    monkeypatch.setenv("POSTMESH_KAFKA_TLS_CA_FILE", str(ca))
    sec = KafkaSecurity.from_settings(load_settings(ServiceSettings))
    kw = sec.client_kwargs()
    assert kw["sasl_plain_password"] == PASSWORD  # the trailing newline is not part of it
    ctx = kw["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext) and ctx.check_hostname
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    secret.write_text("rotated-password\n")  # a rotated Secret: the next client uses it
    assert sec.client_kwargs()["sasl_plain_password"] == "rotated-password"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"POSTMESH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "POSTMESH_KAFKA_USERNAME"),
        (
            {"POSTMESH_KAFKA_PASSWORD": PASSWORD, "POSTMESH_KAFKA_PASSWORD_FILE": "/etc/hostname"},
            "not both",
        ),
        ({"POSTMESH_KAFKA_PASSWORD_FILE": "/nonexistent/pw"}, "POSTMESH_KAFKA_PASSWORD_FILE"),
        ({"POSTMESH_KAFKA_TLS_CERT_FILE": "/etc/hostname"}, "_KEY_FILE go together"),
    ],
)
def test_inconsistent_kafka_settings_stop_with_a_message_without_the_secret(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    named: str,
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit):
        load_settings(ServiceSettings)
    err = capsys.readouterr().err
    assert named in err
    assert PASSWORD not in err


def test_mongo_url_file_password_and_tls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url_file = tmp_path / "url"
    url_file.write_text(f"mongodb://app:{MONGO_PASSWORD}@db.example:27017/?tls=true\n")
    monkeypatch.setenv("POSTMESH_MONGODB_URL_FILE", str(url_file))
    monkeypatch.setenv("POSTMESH_MONGODB_TLS_CA_FILE", "/etc/ssl/ca.pem")
    s = load_settings(MongoSettings)
    url, kw = s.mongo_client_args()
    assert url == f"mongodb://app:{MONGO_PASSWORD}@db.example:27017/?tls=true"
    assert kw == {"serverSelectionTimeoutMS": 5000, "tls": True, "tlsCAFile": "/etc/ssl/ca.pem"}
    assert MONGO_PASSWORD not in s.mongodb_url_redacted()
    assert s.mongodb_url_redacted() == "mongodb://app:**********@db.example:27017/?tls=true"


def test_mongo_password_apart_from_the_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(MONGO_PASSWORD)
    monkeypatch.setenv("POSTMESH_MONGODB_URL", "mongodb://127.0.0.1:27017")
    monkeypatch.setenv("POSTMESH_MONGODB_USERNAME", "app")
    monkeypatch.setenv("POSTMESH_MONGODB_PASSWORD_FILE", str(pw))
    s = load_settings(MongoSettings)
    assert MONGO_PASSWORD not in repr(s)
    _, kw = s.mongo_client_args()
    assert (kw["username"], kw["password"]) == ("app", MONGO_PASSWORD)


def test_mongo_password_without_user_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POSTMESH_MONGODB_PASSWORD", MONGO_PASSWORD)
    with pytest.raises(SystemExit):
        load_settings(MongoSettings)
    err = capsys.readouterr().err
    assert "POSTMESH_MONGODB_USERNAME" in err and MONGO_PASSWORD not in err


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mongodb://u:p%40ss@h1:1,h2:2/db", "mongodb://u:**********@h1:1,h2:2/db"),
        ("mongodb+srv://cluster.example/db", "mongodb+srv://cluster.example/db"),
        (
            "mongodb://h/?tls=true&tlsCertificateKeyFilePassword=x",
            "mongodb://h/?tls=true&tlsCertificateKeyFilePassword=**********",
        ),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_admin_token_from_env_or_file_never_shown(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from postmesh.common.admin_token import AdminTokenSettings

    token = "admin-token-" + "x" * 20
    monkeypatch.setenv("POSTMESH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("POSTMESH_ADMIN_TOKEN", token)
    s = load_settings(AdminTokenSettings)
    assert token not in repr(s) and s.admin_token_value() == token
    monkeypatch.setenv("POSTMESH_ADMIN_TOKEN", "short-" + PASSWORD[:5])
    with pytest.raises(SystemExit):
        load_settings(AdminTokenSettings)
    err = capsys.readouterr().err
    assert "POSTMESH_ADMIN_TOKEN=**********" in err and PASSWORD[:5] not in err
    monkeypatch.delenv("POSTMESH_ADMIN_TOKEN")
    (tmp_path / "token").write_text(token + "\n")
    monkeypatch.setenv("POSTMESH_ADMIN_TOKEN_FILE", str(tmp_path / "token"))
    assert load_settings(AdminTokenSettings).admin_token_value() == token
    assert not (tmp_path / "admin-token").exists()  # configured: none generated
    monkeypatch.setenv("POSTMESH_ADMIN_TOKEN", token)
    with pytest.raises(SystemExit):
        load_settings(AdminTokenSettings)
    assert "not both" in capsys.readouterr().err


async def test_a_refused_bus_is_a_startup_error_naming_it_without_the_password() -> None:
    import socket

    from postmesh.common.bus.kafka import KafkaBus
    from postmesh.common.service import StartupError

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sec = KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", "postmesh", None, PASSWORD)
    bus = KafkaBus(f"127.0.0.1:{port}", "test", create_topics=["t"], security=sec)
    with pytest.raises(StartupError) as err:
        await bus.start()
    text = str(err.value)
    assert f"the Kafka bus at 127.0.0.1:{port}" in text
    assert "SASL SCRAM-SHA-512 as 'postmesh'" in text and "Connect call failed" in text
    assert PASSWORD not in text
    await bus.stop()


def test_main_exits_1_with_one_line_on_a_startup_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from postmesh.common.service import Service, StartupError, main

    class Refused(Service):
        async def start(self) -> None:
            raise StartupError("the Kafka bus at b:9093 refused the connection")

        async def stop(self) -> None:
            pass

    monkeypatch.setenv("POSTMESH_OPS_PORT", "0")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with pytest.raises(SystemExit) as exc:
            main(ServiceSettings, lambda s: Refused(), "test")
    finally:  # main configured the process's logging for the captured stderr
        root.handlers[:] = handlers
        root.setLevel(level)
    assert exc.value.code == 1
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    errors = [e for e in lines if e["level"] == "error"]
    assert [e["msg"] for e in errors] == [
        "service could not start: the Kafka bus at b:9093 refused the connection"
    ]
    assert not any("exc" in e for e in lines)  # no traceback
