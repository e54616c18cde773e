"""STARTTLS, LOGIN and AUTHENTICATE (not authenticated state)."""

from __future__ import annotations

import asyncio

from postmesh.common import sasl
from postmesh.common.backend import BackendUnavailable, BoundVerifier
from postmesh.common.logging import bind_log_context, get_logger, kv
from postmesh.common.sasl.plain import AUTHZID_REFUSED
from postmesh.imap_gw import metrics
from postmesh.imap_gw.commands import NOT_AUTHENTICATED, handles
from postmesh.imap_gw.parser.commands import Authenticate, Login, StartTls
from postmesh.imap_gw.session import Result, Session, bad, no, ok
from postmesh.imap_gw.state import State

log = get_logger(__name__)


@handles(StartTls, NOT_AUTHENTICATED)
async def starttls(session: Session, cmd: StartTls) -> Result:
    if session.conn.tls_active:
        return bad("TLS is already active")
    context = session.tls_context
    if context is None:
        return no("TLS is not available", "UNAVAILABLE")
    # Anything pipelined after STARTTLS came in cleartext: it must not be executed as if it had
    # arrived under TLS (the STARTTLS command-injection attack, cf. RFC 9051 §6.2.1).
    dropped = session.conn.drop_buffered_input()
    if dropped:
        log.warning("input pipelined after STARTTLS dropped", extra=kv(bytes=dropped))

    async def upgrade() -> None:
        await session.conn.start_tls(context)
        log.info("TLS started", extra=kv(version=_tls_version(session)))

    result = ok("Begin TLS negotiation now")
    result.after = upgrade
    return result


def _tls_version(session: Session) -> str:
    obj = session.conn.writer.get_extra_info("ssl_object")
    return str(obj.version()) if obj is not None else ""


async def _login(session: Session, username: str, password: str) -> Result:
    """LOGIN (RFC 9051 §6.2.3)."""
    try:
        verdict = await session.auth.check_password(
            username, password, remote_ip=session.peer_host, mechanism=""
        )
    except BackendUnavailable:
        metrics.AUTH_TOTAL.labels("LOGIN", "error").inc()
        return _auth_unavailable()
    return await _enter(session, verdict.user, username, "LOGIN")


def _auth_unavailable() -> Result:
    return no("Authentication service unavailable, try again later", "UNAVAILABLE")


async def _enter(session: Session, user: str | None, username: str, mechanism: str) -> Result:
    """After the credentials were checked (``user`` None: refused, locked out included)."""
    if user is None:
        session.auth_failures += 1
        metrics.AUTH_TOTAL.labels(mechanism, "failed").inc()
        log.info("authentication failed", extra=kv(username=username, mechanism=mechanism))
        # Slows guessing; the reason never tells whether the user exists or is locked out.
        await asyncio.sleep(session.settings.imap_auth_failure_delay_seconds)
        return no("Authentication failed", "AUTHENTICATIONFAILED")
    if not session.claim_user(user):
        metrics.AUTH_TOTAL.labels(mechanism, "limit").inc()
        log.info("session limit reached", extra=kv(username=user, mechanism=mechanism))
        return no("Too many sessions for this user on this server", "LIMIT")
    try:
        # A user who never received mail has no mailboxes yet; the store creates INBOX and the
        # special-use mailboxes on first use (idempotent).
        await session.store.provision_user(user)
    except BackendUnavailable:
        metrics.AUTH_TOTAL.labels(mechanism, "error").inc()
        return no("Mail store unavailable, try again later", "UNAVAILABLE")
    session.user = user
    session.state = State.AUTHENTICATED
    bind_log_context(user=user)
    metrics.AUTH_TOTAL.labels(mechanism, "ok").inc()
    log.info("logged in", extra=kv(mechanism=mechanism, tls=session.conn.tls_active))
    # The capabilities change after login: tell them in the response code (RFC 9051 §7.1).
    return ok("Logged in", "CAPABILITY " + " ".join(session.capabilities()))


def _privacy_required() -> Result:
    return no(
        "Plaintext authentication is disallowed on non-TLS connections; use STARTTLS",
        "PRIVACYREQUIRED",
    )


@handles(Login, NOT_AUTHENTICATED)
async def login(session: Session, cmd: Login) -> Result:
    if not session.plaintext_auth_allowed:
        return _privacy_required()  # RFC 9051 §6.2.3: LOGINDISABLED
    try:
        username, password = cmd.username.decode("utf-8"), cmd.password.decode("utf-8")
    except UnicodeDecodeError:
        return bad("User name and password must be UTF-8")
    return await _login(session, username, password)


@handles(Authenticate, NOT_AUTHENTICATED)
async def authenticate(session: Session, cmd: Authenticate) -> Result:
    """AUTHENTICATE (RFC 9051 §6.2.2) with any mechanism of postmesh.common.sasl: PLAIN,
    LOGIN, SCRAM-SHA-256; the initial response on the command line with SASL-IR (RFC 4959)."""
    mech = sasl.create(cmd.mechanism)
    if mech is None:
        return no(f"Unsupported authentication mechanism {cmd.mechanism}", "CANNOT")
    if mech.name not in sasl.offered(session.plaintext_auth_allowed):
        return _privacy_required()
    initial = None if cmd.initial_response is None else cmd.initial_response.decode("ascii")

    async def challenge(data: str) -> str:
        # A continuation request carrying the base64 challenge (RFC 9051 §7.5).
        await session.send(b"+ " + data.encode() + b"\r\n")
        return (await session.conn.read_line()).decode("ascii", "replace")

    try:
        outcome = await sasl.run_exchange(
            mech, initial, challenge, BoundVerifier(session.auth, session.peer_host)
        )
    except sasl.SaslCancelled:
        # RFC 9051 §6.2.2: a cancelled exchange is rejected with BAD.
        return bad("Authentication cancelled")
    except sasl.SaslError as e:
        return bad(f"Invalid SASL {mech.name} response: {e}")
    except BackendUnavailable:
        metrics.AUTH_TOTAL.labels(mech.name, "error").inc()
        return _auth_unavailable()
    if outcome.reason == AUTHZID_REFUSED:
        # Acting as another user would need a master-user policy.
        session.auth_failures += 1
        metrics.AUTH_TOTAL.labels(mech.name, "failed").inc()
        return no("Authorization identity must match the user", "AUTHORIZATIONFAILED")
    return await _enter(session, outcome.user, outcome.authcid, mech.name)
