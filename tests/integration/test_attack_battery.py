"""The attack battery (issue 13 item 4): hostile input over the wire against a running system
of its own (embedded backends), each family counting what it tried and what got through. None
may get through, and after every family each service is still running and ready."""

from __future__ import annotations

import asyncio
import email
import imaplib
import json
import poplib
import smtplib
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool

# Loaded for their descriptors: the battery calls every method of every internal service.
from postmesh.api.auth.v1 import auth_pb2  # noqa: F401
from postmesh.api.store.v1 import queue_pb2, store_pb2  # noqa: F401
from postmesh.common.devstack import SERVICES, Stack
from postmesh.common.grpc_security import POLICY, identity_name
from tests.integration.infra.dnsmasq import Dnsmasq, Zone
from tests.integration.stack import embedded_env, free_stack_ports, quick_env, wait_for
from tests.integration.test_mail_end_to_end import create_user, imap_fetch_all, insecure_tls

PASSWORD = "battery-pass-1"


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Dnsmasq(Zone(zones=["test", "example"])) as dns:
        env = {**quick_env(), **embedded_env(), "POSTMESH_DNS_SERVERS": dns.servers}
        # On TCP with mutual TLS, as between pods: the gRPC perimeter is attacked below.
        stack = Stack(
            Path(tmp_path_factory.mktemp("battery")), free_stack_ports(), env, local_grpc=False
        )
        stack.start(timeout=90)
        try:
            yield stack
        finally:
            stack.stop()


@pytest.fixture(scope="module")
def victim(target: Stack) -> str:
    user = f"victim-{uuid.uuid4().hex[:8]}@example.test"
    create_user(target, user, PASSWORD)
    return user


def report(family: str, tried: int, through: list[str]) -> None:
    print(f"attack battery: {family}: tried {tried}, got through {len(through)}")
    assert tried > 0
    assert through == [], f"{family}: {through}"


def assert_intact(stack: Stack) -> None:
    """Every service process still runs and answers ready on its ops port."""
    for name, proc in stack.procs.items():
        assert proc.poll() is None, f"{name} died: {stack.log_tail(name)}"
    for service in SERVICES:
        url = f"http://127.0.0.1:{stack.ports.ops[service]}/readyz"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200, service


# --- internal gRPC -----------------------------------------------------------------------------


def _methods() -> list[tuple[str, str]]:
    pool = descriptor_pool.Default()
    out = []
    for service in POLICY:
        if service.startswith("grpc."):
            continue
        for method in pool.FindServiceByName(service).methods:
            out.append((service, method.name))
    return out


def _target_of(service: str) -> str:
    return "auth" if ".auth." in service else "store"


async def _call(channel: grpc.aio.Channel, service: str, method: str) -> grpc.StatusCode:
    """An empty request to any method, unary on the wire: the authorization check comes before
    the handler, so streaming methods answer the same way."""
    call = channel.unary_unary(
        f"/{service}/{method}",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    try:
        await call(b"", timeout=10)
    except grpc.aio.AioRpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def test_grpc_without_a_client_certificate_is_refused(target: Stack) -> None:
    ca = target.grpc_security("delivery").ca
    through: list[str] = []
    tried = 0

    async def run() -> None:
        nonlocal tried
        for server, port in (("store", target.ports.store_grpc), ("auth", target.ports.auth_grpc)):
            opts = [("grpc.ssl_target_name_override", identity_name(server))]
            anonymous = grpc.aio.secure_channel(
                f"127.0.0.1:{port}", grpc.ssl_channel_credentials(root_certificates=ca), opts
            )
            plaintext = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            for kind, ch in (("no client certificate", anonymous), ("plaintext", plaintext)):
                for service, method in [m for m in _methods() if _target_of(m[0]) == server]:
                    tried += 1
                    code = await _call(ch, service, method)
                    if code != grpc.StatusCode.UNAVAILABLE:
                        through.append(f"{kind} {service}/{method}: {code.name}")
                await ch.close()

    asyncio.run(run())
    report("gRPC without a client certificate", tried, through)
    assert_intact(target)


def test_grpc_with_another_services_certificate_is_denied(target: Stack) -> None:
    through: list[str] = []
    tried = 0

    async def run() -> None:
        nonlocal tried
        channels = {
            (caller, server): grpc.aio.secure_channel(
                f"127.0.0.1:{port}",
                target.grpc_security(caller).channel_credentials(),
                [("grpc.ssl_target_name_override", identity_name(server))],
            )
            for caller in SERVICES
            for server, port in (
                ("store", target.ports.store_grpc),
                ("auth", target.ports.auth_grpc),
            )
        }
        for service, method in _methods():
            allowed = POLICY[service].callers(method)
            for caller in SERVICES:
                if caller in allowed:
                    continue
                tried += 1
                code = await _call(channels[(caller, _target_of(service))], service, method)
                if code != grpc.StatusCode.PERMISSION_DENIED:
                    through.append(f"{caller} -> {service}/{method}: {code.name}")
        for ch in channels.values():
            await ch.close()

    asyncio.run(run())
    report("gRPC with another service's certificate", tried, through)
    assert_intact(target)


# --- the mail protocols ------------------------------------------------------------------------


def _raw(port: int, payload: bytes, read: int = 1) -> list[bytes]:
    """Connect, read the greeting, send ``payload``, read ``read`` reply lines (fewer when the
    server closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(payload)
        lines = []
        for _ in range(read):
            try:
                line = f.readline()
            except (ConnectionResetError, TimeoutError):
                break
            if not line:
                break
            lines.append(line)
        return lines


def test_spoofed_proxy_headers_are_not_honoured(target: Stack) -> None:
    """The PROXY protocol is off here: a header is a bad command, never a new client address."""
    headers = [
        b"PROXY TCP4 127.0.0.1 127.0.0.1 1 2\r\n",
        b"PROXY TCP6 ::1 ::1 1 2\r\n",
        b"\r\n\r\n\x00\r\nQUIT\n" + b"\x21\x11\x00\x0c" + bytes(12),  # a v2 header
    ]
    refusals = {
        target.ports.smtp_mx: (b"500", b"501", b"502"),
        # IMAP reads "PROXY" as a command tag: a tagged BAD.
        target.ports.imap: (b"* BAD", b"* BYE", b"PROXY BAD"),
        target.ports.pop3: (b"-ERR",),
    }
    through = []
    for port, refused in refusals.items():
        for header in headers:
            reply = _raw(port, header)
            if reply and not reply[0].startswith(refused):
                through.append(f"port {port}: {header!r} -> {reply[0]!r}")
    report("spoofed PROXY headers", len(refusals) * len(headers), through)
    assert_intact(target)


# End markers other MTAs have been fooled by (SEC Consult's SMTP smuggling research).
FAKE_END_MARKERS = [b"\n.\r\n", b"\n.\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r", b"\r.\r"]


def test_smtp_smuggling_never_makes_a_second_message(target: Stack, victim: str) -> None:
    accepted = 0
    for marker in FAKE_END_MARKERS:
        payload = (
            b"Subject: innocent\r\n\r\nhello" + marker + b"MAIL FROM:<ceo@example.test>\r\n"
            b"RCPT TO:<" + victim.encode() + b">\r\nDATA\r\nSubject: smuggled\r\n\r\n"
            b"wire the money\r\n.\r\n"
        )
        with smtplib.SMTP("127.0.0.1", target.ports.smtp_mx, timeout=30) as s:
            s.ehlo("attacker.example")
            assert s.mail("someone@attacker.example")[0] == 250
            assert s.rcpt(victim)[0] == 250
            s.putcmd("DATA")
            assert s.getreply()[0] == 354
            s.send(payload)
            accepted += s.getreply()[0] == 250
            assert s.noop()[0] == 250  # the smuggled commands were never read as commands
    # What was accepted arrives as one message per transaction; the smuggled one can only be
    # text inside an innocent message (bare LF lines are normalised), never a message.
    messages = wait_for(
        lambda: ((m := imap_fetch_all(target, victim, PASSWORD)) and len(m) >= accepted and m)
        or None, 30, "the accepted messages",
    )  # fmt: skip
    subjects = [email.message_from_bytes(m)["Subject"] for m in messages]
    through = [f"a message with Subject {x!r}" for x in subjects if x != "innocent"]
    if len(messages) != accepted:
        through.append(f"{len(messages)} messages from {accepted} transactions")
    report("SMTP smuggling", len(FAKE_END_MARKERS), through)
    assert_intact(target)


def _starttls_injection(port: int, starttls: bytes, injected: bytes, probe: bytes) -> bytes:
    """Sends a STARTTLS command with a command glued behind it in the same packet, then the
    TLS handshake, then ``probe``: returns the first line answered over TLS."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        f = sock.makefile("rb")
        f.readline()
        if starttls.startswith(b"STARTTLS"):  # SMTP: EHLO first (RFC 3207)
            sock.sendall(b"EHLO attacker.example\r\n")
            while f.readline()[3:4] == b"-":
                pass
        sock.sendall(starttls + injected)
        assert f.readline()  # the go-ahead
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with ctx.wrap_socket(sock) as tls:
            tls.sendall(probe)
            return tls.makefile("rb").readline()


def test_starttls_command_injection_is_discarded(target: Stack) -> None:
    cases = [
        (target.ports.smtp_submission, b"STARTTLS\r\n", b"NOOP\r\n", b"EHLO a.example\r\n",
         b"250-"),
        (target.ports.imap, b"s STARTTLS\r\n", b"i NOOP\r\n", b"p NOOP\r\n", b"p OK"),
        (target.ports.pop3, b"STLS\r\n", b"CAPA\r\n", b"NOOP\r\n", b"-ERR"),
    ]  # fmt: skip
    through = []
    for port, starttls, injected, probe, expected in cases:
        first = _starttls_injection(port, starttls, injected, probe)
        # The first answer over TLS is the probe's: the injected plaintext command is gone.
        if not first.startswith(expected):
            through.append(f"port {port}: {injected!r} answered {first!r}")
    report("STARTTLS command injection", len(cases), through)
    assert_intact(target)


OPEN_RELAY_FORMS = [
    "<victim@remote.example>",
    "<victim%remote.example@example.test>",
    "<@example.test:victim@remote.example>",
    "<victim@remote.example@example.test>",
    '<"victim@remote.example"@example.test>',
    "<remote.example!victim@example.test>",
    "<victim@remote.example.>",
    "<victim@[203.0.113.5]>",
    "<victim@[IPv6:2001:db8::1]>",
    "<VICTIM@REMOTE.EXAMPLE>",
]


def test_open_relay_address_forms_are_refused(target: Stack) -> None:
    through = []
    with smtplib.SMTP("127.0.0.1", target.ports.smtp_mx, timeout=30) as s:
        s.ehlo("attacker.example")
        for form in OPEN_RELAY_FORMS:
            assert s.mail("spammer@attacker.example")[0] == 250
            code, text = s.docmd(f"RCPT TO:{form}")
            if code == 250:
                through.append(f"{form}: {text!r}")
            s.rset()
    report("open-relay address forms", len(OPEN_RELAY_FORMS), through)
    assert_intact(target)


def test_oversize_and_nul_commands_on_every_protocol(target: Stack) -> None:
    long = b"x" * 70_000
    cases: list[tuple[str, int, bytes, tuple[bytes, ...]]] = [
        ("smtp long", target.ports.smtp_mx, b"NOOP " + long + b"\r\n", (b"500", b"421")),
        ("smtp nul", target.ports.smtp_mx, b"HELO a\x00b\r\n", (b"501", b"500")),
        ("smtp nul mail", target.ports.smtp_mx,
         b"EHLO a.example\r\nMAIL FROM:<a\x00b@example.test>\r\n", (b"250",)),
        ("imap long", target.ports.imap, b"a NOOP " + long + b"\r\n", (b"a BAD", b"* BAD", b"* BYE")),
        ("imap nul", target.ports.imap, b"a LOGIN u\x00 p\r\n", (b"a BAD", b"* BAD")),
        ("pop3 long", target.ports.pop3, b"USER " + long + b"\r\n", (b"-ERR",)),
        ("pop3 nul", target.ports.pop3, b"USER a\x00b\r\n", (b"-ERR",)),
    ]  # fmt: skip
    through = []
    for name, port, payload, refused in cases:
        reply = _raw(port, payload, read=12)
        if name == "smtp nul mail":
            # After the EHLO reply lines, MAIL FROM with a NUL must not be accepted.
            mail_reply = [r for r in reply if not r.startswith(b"250")]
            if not mail_reply or mail_reply[0].startswith(b"2"):
                through.append(f"{name}: {reply!r}")
        elif not reply or not reply[0].startswith(refused):
            through.append(f"{name}: {reply[:1]!r}")
    report("oversize and NUL-laden commands", len(cases), through)
    assert_intact(target)


def test_literal_bombs_get_no_continuation(target: Stack) -> None:
    bombs = [
        b"a LOGIN {4294967295}\r\n",
        b"a LOGIN {99999999999999999999999}\r\n",
        b"a LOGIN {1000000000+}\r\n" + b"x" * 10_000,
        b"a APPEND INBOX {2147483647}\r\n",
        b"a LOGIN {-1}\r\n",
    ]
    through = []
    for bomb in bombs:
        reply = _raw(target.ports.imap, bomb, read=1)
        # A "+" continuation would invite the gigabytes; a refusal or a hang-up is right.
        if reply and reply[0].startswith(b"+"):
            through.append(f"{bomb[:40]!r}: {reply[0]!r}")
    report("IMAP literal bombs", len(bombs), through)
    assert_intact(target)


def test_login_flood_locks_the_account_on_every_protocol(target: Stack) -> None:
    user = f"flooded-{uuid.uuid4().hex[:8]}@example.test"
    create_user(target, user, PASSWORD)
    attempts = 0
    for i in range(12):  # past auth's account threshold (10 in 15 minutes)
        attempts += 1
        with (
            imaplib.IMAP4("127.0.0.1", target.ports.imap) as imap,
            pytest.raises(imaplib.IMAP4.error),
        ):
            imap.login(user, f"guess-{i}")
    through = []
    # The right password no longer opens the account anywhere while it is locked.
    with imaplib.IMAP4("127.0.0.1", target.ports.imap) as imap:
        try:
            imap.login(user, PASSWORD)
            through.append("IMAP login with the right password during the lockout")
        except imaplib.IMAP4.error:
            pass
    pop = poplib.POP3("127.0.0.1", target.ports.pop3, timeout=30)
    try:
        pop.user(user)
        pop.pass_(PASSWORD)
        through.append("POP3 login with the right password during the lockout")
    except poplib.error_proto as e:
        assert b"[LOGIN-DELAY]" in e.args[0] or b"[AUTH]" in e.args[0], e
    finally:
        pop.close()
    with smtplib.SMTP("127.0.0.1", target.ports.smtp_submission, timeout=30) as smtp:
        smtp.starttls(context=insecure_tls())
        try:
            smtp.login(user, PASSWORD)
            through.append("SMTP AUTH with the right password during the lockout")
        except smtplib.SMTPAuthenticationError:
            pass
    report("login flood", attempts, through)
    assert_intact(target)


def _admin(stack: Stack, method: str, path: str, token: str | None, body: object = None) -> int:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = token
    req = urllib.request.Request(
        f"http://127.0.0.1:{stack.ports.admin}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers=headers,
        method=method,
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_admin_api_without_a_valid_token_is_refused(target: Stack) -> None:
    real = target.admin_token()
    tokens: list[str | None] = [
        None, "", "Bearer", "Bearer ", f"Bearer {real[:-1]}", f"Bearer {real}x",
        f"Basic {real}", f"bearer{real}", "Bearer " + "A" * 10_000,
    ]  # fmt: skip
    requests: list[tuple[str, str, object]] = [
        ("GET", "/api/v1/domains", None),
        ("GET", "/api/v1/users", None),
        ("POST", "/api/v1/users", {"address": "mallory@example.test", "password": "x" * 12}),
        ("GET", "/api/v1/domains/example.test/dkim-keys", None),
        ("POST", "/api/v1/aliases", {"address": "all@example.test", "targets": ["m@evil.test"]}),
        ("PUT", "/api/v1/domains/example.test/catch-all", {"target": "m@evil.test"}),
        ("POST", "/api/v1/users/postmaster@example.test/disable", None),
        ("PUT", "/api/v1/users/postmaster@example.test/password", {"password": "x" * 12}),
        ("DELETE", "/api/v1/users/postmaster@example.test", None),
    ]
    through = []
    for token in tokens:
        for method, path, body in requests:
            status = _admin(target, method, path, token, body)
            if status != 401:
                through.append(f"{method} {path} with {str(token)[:20]!r}: {status}")
    report("admin API without a valid token", len(tokens) * len(requests), through)
    assert_intact(target)


def _admin_json(stack: Stack, method: str, path: str, body: object) -> object:
    req = urllib.request.Request(
        f"http://127.0.0.1:{stack.ports.admin}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {stack.admin_token()}",
        },
        method=method,
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_domain_admin_tokens_stay_in_their_domains(target: Stack) -> None:
    """A domain admin's token against every other domain (spelled as the canonical form
    would turn it into that domain: case, trailing dot, full-width letters, percent-encoded),
    the admin-only actions and the delivery queue: each a 403; tampered tokens a 401."""
    tag = uuid.uuid4().hex[:8]
    mine, theirs = f"mine-{tag}.test", f"theirs-{tag}.test"
    for domain in (mine, theirs):
        assert _admin(target, "POST", "/api/v1/domains", f"Bearer {target.admin_token()}", {"name": domain}) == 201  # fmt: skip
    create_user(target, f"ann@{theirs}", PASSWORD)
    issued = _admin_json(target, "POST", "/api/v1/tokens", {"domains": [mine]})
    assert isinstance(issued, dict)
    token = f"Bearer {issued['token']}"
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in theirs)
    spellings = [theirs, theirs.upper(), theirs + ".", fullwidth]
    requests: list[tuple[str, str, object]] = [
        ("POST", "/api/v1/domains", {"name": f"new-{tag}.test"}),
        ("GET", "/api/v1/tokens", None),
        ("POST", "/api/v1/tokens", {"domains": [theirs]}),
        ("POST", "/api/v1/tokens", {"domains": [mine]}),
        ("DELETE", f"/api/v1/tokens/{issued['id']}", None),
    ]
    for d in spellings:
        ann = urllib.parse.quote(f"ann@{d}", safe="@")
        requests += [
            ("POST", "/api/v1/users", {"address": f"eve@{d}", "password": "x" * 12}),
            ("GET", f"/api/v1/users?domain={urllib.parse.quote(d)}", None),
            ("GET", f"/api/v1/users/{ann}", None),
            ("GET", f"/api/v1/users/{ann.replace('@', '%40')}", None),
            ("GET", f"/api/v1/users/nobody@{urllib.parse.quote(d)}", None),
            ("POST", f"/api/v1/users/{ann}/disable", None),
            ("PUT", f"/api/v1/users/{ann}/password", {"password": "x" * 12}),
            ("PUT", f"/api/v1/users/{ann}/quota", {"storage_limit_bytes": 1}),
            ("DELETE", f"/api/v1/users/{ann}", None),
            ("POST", "/api/v1/aliases", {"address": f"all@{d}", "targets": [f"ann@{mine}"]}),
            ("POST", "/api/v1/aliases", {"address": f"steal@{mine}", "targets": [f"ann@{d}"]}),
            (
                "PUT",
                f"/api/v1/domains/{urllib.parse.quote(d)}/catch-all",
                {"target": f"ann@{mine}"},
            ),
            ("PUT", f"/api/v1/domains/{mine}/catch-all", {"target": f"ann@{d}"}),
            ("POST", f"/api/v1/domains/{urllib.parse.quote(d)}/dkim-keys/rotate", None),
            ("GET", f"/api/v1/domains/{urllib.parse.quote(d)}/dns-records", None),
        ]
    through = []
    for method, path, body in requests:
        status = _admin(target, method, path, token, body)
        if status != 403:
            through.append(f"{method} {path}: {status}")
    tried = len(requests)
    for path in ("/api/v1/queue", "/api/v1/trace/X"):
        tried += 1
        req = urllib.request.Request(
            f"http://127.0.0.1:{target.ports.queue_admin}{path}", headers={"Authorization": token}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                through.append(f"queue API {path}: {resp.status}")
        except urllib.error.HTTPError as e:
            if e.code != 403:
                through.append(f"queue API {path}: {e.code}")
    # Tampered: another id with this secret, this id with a changed secret, the bare secret.
    secret = str(issued["token"]).rsplit("_", 1)[1]
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    for forged in (f"pmda_{'0' * 16}_{secret}", f"pmda_{issued['id']}_{flipped}", secret):
        tried += 1
        status = _admin(target, "GET", f"/api/v1/users?domain={mine}", f"Bearer {forged}")
        if status != 401:
            through.append(f"forged token {forged[:24]}...: {status}")
    report("domain admin outside its domains", tried, through)
    users = _admin_json(target, "GET", f"/api/v1/users?domain={theirs}", None)
    assert users == [{"address": f"ann@{theirs}"}]
    assert _admin_json(target, "GET", f"/api/v1/aliases?domain={mine}", None) == []
    assert _admin_json(target, "GET", f"/api/v1/users?domain={mine}", None) == []
    assert_intact(target)


INJECTION_NAMES = [
    "../../etc/passwd", "..", "a/../../b", "INBOX/../../other", "/", "//", "~root",
    '{"$gt": ""}', "$where", "'; DROP TABLE messages; --", "a\\b", "%", "*" * 3,
]  # fmt: skip


def test_path_and_injection_like_names_and_addresses(target: Stack, victim: str) -> None:
    through = []
    tried = 0
    other = f"other-{uuid.uuid4().hex[:8]}@example.test"
    create_user(target, other, PASSWORD)
    with imaplib.IMAP4("127.0.0.1", target.ports.imap) as imap:
        imap.login(other, PASSWORD)
        for name in INJECTION_NAMES:
            tried += 1
            quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
            typ, _ = imap.create(quoted)
            if typ == "OK":
                # Allowed as a plain name of this user's own: it must list as exactly that.
                _, listed = imap.list('""', quoted)
                lines = [x for x in listed if isinstance(x, bytes)]
                if not any(x.endswith(quoted.encode()) for x in lines):
                    through.append(f"CREATE {name!r} made something else: {listed!r}")
                imap.delete(quoted)
        typ, listed = imap.list('""', "*")
        names = b" ".join(x for x in listed if isinstance(x, bytes))
        if victim.split("@")[0].encode() in names:
            through.append("another user's mailbox visible")
        for username in ['{"$ne": null}', "*", victim + "\x00", "' OR '1'='1"]:
            tried += 1
            with imaplib.IMAP4("127.0.0.1", target.ports.imap) as probe:
                try:
                    probe.login(username, "' OR '1'='1")
                    through.append(f"LOGIN as {username!r}")
                except imaplib.IMAP4.error:
                    pass
    with smtplib.SMTP("127.0.0.1", target.ports.smtp_mx, timeout=30) as s:
        s.ehlo("attacker.example")
        for local in ['{"$ne":1}', "../../x", "*", "%", "victim\\@x"]:
            tried += 1
            assert s.mail("spammer@attacker.example")[0] == 250
            code, _ = s.docmd(f"RCPT TO:<{local}@example.test>")
            if code == 250:
                through.append(f"RCPT {local!r}@example.test accepted")
            s.rset()
    addresses: list[object] = [{"$gt": ""}, "../../x@example.test", "a@b@example.test", "", None]
    for address in addresses:
        tried += 1
        status = _admin(
            target, "POST", "/api/v1/users", f"Bearer {target.admin_token()}",
            {"address": address, "password": "long-enough-pw"},
        )  # fmt: skip
        if status != 422:
            through.append(f"admin POST user {address!r}: {status}")
        tried += 1
        status = _admin(
            target, "POST", "/api/v1/aliases", f"Bearer {target.admin_token()}",
            {"address": "alias@example.test", "targets": [address]},
        )  # fmt: skip
        if status != 422:
            through.append(f"admin POST alias target {address!r}: {status}")
    report("path- and injection-like names and addresses", tried, through)
    assert_intact(target)
