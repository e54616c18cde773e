"""Per-connection SMTP state and the policy decisions made on it, without any I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from postmesh.common.net import plaintext_auth_allowed
from postmesh.smtp_edge.backend import RecipientKind
from postmesh.smtp_edge.protocol import MailCommand
from postmesh.smtp_edge.queueing import EnvelopeRecipient
from postmesh.smtp_edge.received import TlsFacts


@dataclass(frozen=True, slots=True)
class ListenerPolicy:
    name: str  # "mx", "submission", "submissions" (ClientInfo.listener)
    implicit_tls: bool  # RFC 8314 §3.3: TLS from the first byte
    starttls: bool  # RFC 3207
    auth_enabled: bool
    # RFC 6409 §4.3: a submission server requires authentication before MAIL.
    auth_required: bool


MX = "mx"
SUBMISSION = "submission"
SUBMISSIONS = "submissions"


def listener_policies(mx_auth_enabled: bool) -> list[ListenerPolicy]:
    return [
        ListenerPolicy(MX, False, True, mx_auth_enabled, False),
        ListenerPolicy(SUBMISSION, False, True, True, True),
        ListenerPolicy(SUBMISSIONS, True, False, True, True),
    ]


@dataclass(slots=True)
class Transaction:
    """One MAIL ... DATA transaction (RFC 5321 §3.3)."""

    mail: MailCommand
    # Given at MAIL, as Postfix does: every log line about the message carries it, and it is
    # the id in the Received header, the 250 reply and the bus record.
    queue_id: str
    recipients: list[EnvelopeRecipient] = field(default_factory=list)
    # The content of the BDAT chunks so far (RFC 3030), None until the first; past the size
    # limit the rest is read and discarded and ``too_big`` answers the LAST chunk.
    chunks: bytearray | None = None
    chunk_count: int = 0
    too_big: bool = False
    # RCPTs past the recipient limit (452): not errors up to OVERSHOOT_LIMIT (see smtp.py).
    overshoot: int = 0

    def add(self, rcpt: EnvelopeRecipient) -> None:
        # A recipient given twice is delivered once (as Postfix's cleanup does).
        if all(r.address != rcpt.address for r in self.recipients):
            self.recipients.append(rcpt)


@dataclass(slots=True)
class SessionState:
    session_id: str
    policy: ListenerPolicy
    peer_ip: str
    tls: TlsFacts | None = None
    helo: str | None = None
    esmtp: bool = False
    user: str | None = None
    txn: Transaction | None = None
    in_data: bool = False
    errors: int = 0
    auth_failures: int = 0
    messages: int = 0

    def reset_after_starttls(self, tls: TlsFacts | None) -> None:
        """RFC 3207 §4.2: discard everything learned before TLS (HELO, AUTH, transaction)."""
        self.tls = tls
        self.helo = None
        self.esmtp = False
        self.user = None
        self.txn = None

    @property
    def auth_offered(self) -> bool:
        """AUTH only where passwords cannot be sniffed: over TLS, or from loopback (as Dovecot)."""
        return self.policy.auth_enabled and plaintext_auth_allowed(
            self.peer_ip, self.tls is not None
        )

    @property
    def requiretls_offered(self) -> bool:
        """RFC 8689 §3: REQUIRETLS is offered, and accepted at MAIL, only under TLS (STARTTLS or
        implicit); loopback without TLS does not count, unlike for AUTH."""
        return self.tls is not None

    @property
    def needs_auth(self) -> bool:
        return self.policy.auth_required and self.user is None


def recipient_verdict(kind: RecipientKind, address: str, authenticated: bool) -> tuple[str, str]:
    """(reply, reason) for a resolved RCPT TO; reason "" means accepted."""
    if kind is RecipientKind.UNKNOWN_LOCAL:
        # RFC 3463 X.1.1: bad destination mailbox address.
        return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown", "unknown_user"
    if kind is RecipientKind.DISABLED:
        # RFC 3463 X.2.1: mailbox disabled, not accepting messages.
        return (
            f"550 5.2.1 <{address}>: Recipient address rejected: Mailbox disabled",
            "mailbox_disabled",
        )
    if kind is RecipientKind.REMOTE and not authenticated:
        # Not an open relay: other domains only for authenticated clients (RFC 5321 §7.1).
        return f"554 5.7.1 <{address}>: Relay access denied", "relay_denied"
    return "250 2.1.5 Ok", ""
