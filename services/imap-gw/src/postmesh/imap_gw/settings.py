"""imap-gw settings; each field is read from POSTMESH_<FIELD> (e.g. POSTMESH_IMAP_PORT)."""

from __future__ import annotations

from pydantic import Field

from postmesh.common.config import ServiceSettings


class ImapSettings(ServiceSettings):
    ops_port: int = Field(default=9102, ge=0, le=65535)
    # Address the mail listeners bind to (0.0.0.0 in a container).
    imap_host: str = "127.0.0.1"
    # Plain IMAP with STARTTLS (143 in production) and implicit TLS (993, RFC 8314).
    imap_port: int = Field(default=1143, ge=0, le=65535)
    imaps_port: int = Field(default=1993, ge=0, le=65535)
    # A command line (without its literals) longer than this is refused.
    imap_max_line_bytes: int = Field(default=64 * 1024, ge=1024)
    # One literal inside a command (LOGIN password, mailbox name, ...).
    imap_max_literal_bytes: int = Field(default=64 * 1024, ge=1024)
    # A whole command: its lines and literals together.
    imap_max_command_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Any literal before login: an unauthenticated client needs no more than a user name or a
    # password, so a stranger cannot make the server buffer 64 KiB literals.
    imap_max_preauth_literal_bytes: int = Field(default=8 * 1024, ge=256)
    # Logged-in sessions of one user on this replica (NO [LIMIT] at login beyond it); Dovecot
    # allows 10 per user and IP, Thunderbird alone opens up to 5 per account.
    imap_max_sessions_per_user: int = Field(default=50, ge=1)
    # APPEND: the largest message accepted (advertised as APPENDLIMIT, RFC 7889); the message
    # is streamed to the store, so it is not bound by the literal and command limits above;
    # larger: NO [TOOBIG] before the continuation.
    # Keep it at or below the store's POSTMESH_STORE_MAX_MESSAGE_BYTES.
    imap_max_message_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    # Autologout (RFC 9051 §5.4): at least 30 minutes once authenticated; shorter before login.
    imap_idle_timeout_seconds: float = Field(default=1800.0, gt=0)
    imap_preauth_timeout_seconds: float = Field(default=180.0, gt=0)
    # Consecutive invalid commands before "* BYE" (as Dovecot's limit of 20).
    imap_max_bad_commands: int = Field(default=20, ge=1)
    imap_max_auth_failures: int = Field(default=3, ge=1)
    # Slows password guessing; tests set 0.
    imap_auth_failure_delay_seconds: float = Field(default=1.0, ge=0)
    # ListMessages page size.
    imap_list_page_size: int = Field(default=1000, ge=1, le=100_000)
    # ListMessageFlags page size (SELECT's listing of UIDs, flags and MODSEQs: ~12 bytes a
    # message); the store answers at most 100,000 per page.
    imap_select_page_size: int = Field(default=50_000, ge=1, le=100_000)
    # IDLE (RFC 2177): how often an idling session asks the store itself when mailbox events
    # are not arriving (bus down or not configured); with events it asks at every keepalive,
    # a "* OK Still here" that also keeps NAT and load-balancer connection state alive.
    imap_idle_poll_seconds: float = Field(default=15.0, gt=0)
    imap_idle_keepalive_seconds: float = Field(default=120.0, gt=0)
    # Read mailbox events from the bus (postmesh.mailbox-events) to push changes to sessions.
    imap_mailbox_events: bool = True
    # Carry the frequent small store calls (FETCH of a message, STORE, SELECT's listing, NOOP's
    # changes) as messages on one long-lived stream, StoreService.Calls, instead of one gRPC
    # call each: about half the CPU per call at each end (ADR 0051). Off: every call unary.
    imap_store_call_stream: bool = True
