from __future__ import annotations

from pydantic import Field

from postmesh.common.config import ServiceSettings


class Pop3Settings(ServiceSettings):
    ops_port: int = Field(default=9103, ge=0, le=65535)
    # Address the mail listeners bind to (0.0.0.0 in a container).
    pop3_host: str = "127.0.0.1"
    # Plain POP3 with STLS (production 110) and implicit TLS (production 995, RFC 8314).
    pop3_port: int = Field(default=1110, ge=0, le=65535)
    pop3s_port: int = Field(default=1995, ge=0, le=65535)
    # RFC 1939 §3: the autologout timer MUST be at least 10 minutes; lower only for tests.
    pop3_idle_timeout_seconds: float = Field(default=600.0, gt=0)
    pop3_tls_handshake_timeout_seconds: float = Field(default=30.0, gt=0)
    # Slows password guessing; tests set 0.
    pop3_auth_failure_delay_seconds: float = Field(default=1.0, ge=0)
    # Failed logins after which the connection is closed.
    pop3_max_auth_failures: int = Field(default=3, ge=1)
    # Invalid commands (unknown, bad arguments, wrong state, too long) before we hang up.
    pop3_max_bad_commands: int = Field(default=20, ge=1)
    # RFC 2449 §4 caps command lines at 255 octets; real clients overshoot, so be lenient.
    pop3_max_line_octets: int = Field(default=1024, ge=255, le=65536)
    # Page size of store.ListMessages when the maildrop is opened.
    pop3_list_page_size: int = Field(default=1000, ge=1, le=100_000)
    # RFC 1939 §8 maildrop lock: a lease in the store, renewed every third of it while the
    # session lives; a crashed gateway's sessions lose their locks after at most this long.
    pop3_maildrop_lock_seconds: int = Field(default=60, ge=3, le=3600)
    # As Dovecot: RETR marks the message \Seen (committed at QUIT, with the deletions; RSET
    # undoes it with them).
    pop3_retr_sets_seen: bool = True
    # RETR read-ahead (ADR 38): from the first RETR on, the message asked and the ones after it
    # are read from the store ahead of the commands, several per store call, holding at most
    # this many octets per session (the first RETR asks for all of it; a download of up to
    # this much is one store call, ADR 62). 0 turns read-ahead off.
    pop3_read_ahead_window_octets: int = Field(default=4 * 1024 * 1024, ge=0, le=256 * 1024 * 1024)
    # Larger messages are not read ahead (RETR streams them from the store itself).
    pop3_read_ahead_max_octets: int = Field(default=1024 * 1024, ge=0, le=64 * 1024 * 1024)
    # Messages per store call (GetMessageContents takes at most 1000).
    pop3_read_ahead_batch: int = Field(default=256, ge=1, le=1000)
    # A client silent this long has its read-ahead window freed (it restarts at the next RETR).
    pop3_read_ahead_idle_seconds: float = Field(default=10.0, gt=0)
