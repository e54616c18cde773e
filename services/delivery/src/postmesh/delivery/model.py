"""Outcome of delivering one message to one recipient."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Outcome(Enum):
    DELIVERED = "delivered"
    RELAYED = "relayed"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    # Handed to the deferred queue for the first remote attempt (a trace step, no outcome).
    QUEUED = "queued"


@dataclass(frozen=True, slots=True)
class RecipientResult:
    recipient: str
    outcome: Outcome
    reply_code: str
    status: str
    diagnostic: str
    # The MX host that gave the reply (RFC 3464 §2.3.5 Remote-MTA); empty when made here.
    remote_mta: str = ""
    # The reply as that host gave it (RFC 3464 §2.3.6 Diagnostic-Code); empty: made here.
    remote_reply: str = ""
    # Relayed to a peer that does not offer DSN: it cannot report success itself, so a
    # NOTIFY=SUCCESS sender gets a "relayed" report from us (RFC 3461 §5.2.3).
    relayed_without_dsn: bool = False

    @property
    def diagnostic_code(self) -> str:
        return self.remote_reply or f"{self.reply_code} {self.status} {self.diagnostic}"
