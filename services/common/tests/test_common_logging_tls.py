from __future__ import annotations

import json
import logging
import ssl
import sys
from pathlib import Path

import pytest

from postmesh.common.logging import JsonFormatter, configure_logging, kv, log_context
from postmesh.common.tls import ensure_dev_certificate, server_context


def test_json_lines_carry_the_context(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("smtp-edge", "INFO")
    log = logging.getLogger("postmesh.test")
    with log_context(session_id="S1"), log_context(queue_id="Q1"):
        log.info("accepted", extra=kv(rcpt="a@example.test", size=42))
    log.info("outside")
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert lines[0]["msg"] == "accepted" and lines[0]["service"] == "smtp-edge"
    assert (lines[0]["session_id"], lines[0]["queue_id"]) == ("S1", "Q1")
    assert (lines[0]["rcpt"], lines[0]["size"]) == ("a@example.test", 42)
    assert "session_id" not in lines[1]


def test_exceptions_are_one_json_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, None)
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exc"]


def test_dev_certificate_is_made_once_and_loads(tmp_path: Path) -> None:
    cert, key = ensure_dev_certificate(tmp_path)
    first = cert.read_bytes()
    assert key.stat().st_mode & 0o077 == 0  # the private key is not readable by others
    assert ensure_dev_certificate(tmp_path) == (cert, key) and cert.read_bytes() == first
    ctx = server_context(cert, key)
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_loading_a_certificate_publishes_its_expiry(tmp_path: Path) -> None:
    from cryptography import x509
    from prometheus_client import REGISTRY

    cert, key = ensure_dev_certificate(tmp_path)
    server_context(cert, key)
    not_after = x509.load_pem_x509_certificate(cert.read_bytes()).not_valid_after_utc
    value = REGISTRY.get_sample_value(
        "postmesh_tls_certificate_expiry_timestamp_seconds", {"certificate": "edge"}
    )
    assert value == not_after.timestamp()
