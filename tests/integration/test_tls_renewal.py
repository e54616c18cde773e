"""A renewed edge certificate is served without a restart: the files are replaced as
cert-manager or certbot replace them, and the next STARTTLS on SMTP, IMAP and POP3 (and the
implicit-TLS ports) presents the new certificate, while a session already encrypted goes on."""

from __future__ import annotations

import imaplib
import os
import poplib
import shutil
import smtplib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from postmesh.common.devstack import Stack
from postmesh.common.tls import ensure_dev_certificate
from tests.integration.stack import embedded_env, free_stack_ports, quick_env, wait_for

OLD, NEW = "old-mx.example.test", "new-mx.example.test"


def _client() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # only which certificate is presented matters here
    return ctx


def _name(sock: socket.socket | None) -> str:
    assert isinstance(sock, ssl.SSLSocket)
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    cn = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(
        x509.oid.NameOID.COMMON_NAME
    )
    return str(cn[0].value)


def smtp_name(stack: Stack) -> str:
    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_submission, timeout=10) as smtp:
        smtp.starttls(context=_client())
        return _name(smtp.sock)


def imap_name(stack: Stack) -> str:
    imap = imaplib.IMAP4("127.0.0.1", stack.ports.imap, timeout=10)
    try:
        imap.starttls(ssl_context=_client())
        return _name(imap.sock)
    finally:
        imap.logout()


def imaps_name(stack: Stack) -> str:
    imap = imaplib.IMAP4_SSL("127.0.0.1", stack.ports.imaps, ssl_context=_client(), timeout=10)
    try:
        return _name(imap.sock)
    finally:
        imap.logout()


def pop3_name(stack: Stack) -> str:
    pop = poplib.POP3("127.0.0.1", stack.ports.pop3, timeout=10)
    try:
        pop.stls(context=_client())
        return _name(pop.sock)
    finally:
        pop.quit()


PROBES = {"smtp": smtp_name, "imap": imap_name, "imaps": imaps_name, "pop3": pop3_name}


@pytest.fixture(scope="module")
def renewable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    base = Path(tmp_path_factory.mktemp("tls-renewal"))
    live = base / "live"
    live.mkdir()
    cert, key = ensure_dev_certificate(base / "old", OLD)
    shutil.copyfile(cert, live / "tls.crt")
    shutil.copyfile(key, live / "tls.key")
    env = {
        **quick_env(),
        **embedded_env(),
        "POSTMESH_TLS_CERT_FILE": str(live / "tls.crt"),
        "POSTMESH_TLS_KEY_FILE": str(live / "tls.key"),
        "POSTMESH_TLS_RELOAD_SECONDS": "0.3",
    }
    stack = Stack(base / "stack", free_stack_ports(), env)
    stack.start(timeout=90)
    try:
        yield stack, base
    finally:
        stack.stop()


def test_every_edge_serves_the_renewed_certificate(renewable: tuple[Stack, Path]) -> None:
    stack, base = renewable
    assert {p: probe(stack) for p, probe in PROBES.items()} == dict.fromkeys(PROBES, OLD)

    # A session encrypted before the renewal.
    before = imaplib.IMAP4("127.0.0.1", stack.ports.imap, timeout=10)
    before.starttls(ssl_context=_client())

    # Renewal as a tool does it: key and certificate written aside, renamed into place.
    cert, key = ensure_dev_certificate(base / "new", NEW)
    live = base / "live"
    for src, dst in ((key, live / "tls.key"), (cert, live / "tls.crt")):
        shutil.copyfile(src, dst.with_suffix(".tmp"))
        os.replace(dst.with_suffix(".tmp"), dst)

    for protocol, probe in PROBES.items():
        wait_for(
            lambda probe=probe: True if probe(stack) == NEW else None,  # type: ignore[misc]
            timeout=15,
            what=f"{protocol} to present the renewed certificate",
        )
    # The earlier session still has its keys and answers.
    assert _name(before.sock) == OLD
    assert before.noop()[0] == "OK"
    before.logout()
