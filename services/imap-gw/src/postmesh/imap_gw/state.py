"""Session state (RFC 9051 §3) and the selected mailbox's view: the seq <-> UID map."""

from __future__ import annotations

import bisect
import enum
from dataclasses import dataclass, field

from postmesh.imap_gw.backend import MailboxInfo, MessageMeta


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


@dataclass
class SelectedMailbox:
    """What this session has told the client: message N is ``uids[N-1]``.

    The map changes only when the client is told (EXISTS / EXPUNGE), never behind its back
    (RFC 9051 §7.5.2: sequence numbers must stay stable between such responses).
    """

    name: str
    info: MailboxInfo
    readonly: bool
    uids: list[int] = field(default_factory=list)
    meta: dict[int, MessageMeta] = field(default_factory=dict)

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def append(self, messages: list[MessageMeta]) -> None:
        for m in messages:
            if not self.uids or m.uid > self.uids[-1]:
                self.uids.append(m.uid)
            self.meta[m.uid] = m

    def remove(self, uid: int) -> int | None:
        """Drop ``uid``; returns the sequence number it had (for the EXPUNGE response)."""
        seq = self.seq_of(uid)
        if seq is not None:
            del self.uids[seq - 1]
            self.meta.pop(uid, None)
        return seq

    def keywords(self) -> list[str]:
        seen: dict[str, None] = {}
        for m in self.meta.values():
            for f in m.flags:
                if not f.startswith("\\"):
                    seen.setdefault(f, None)
        return list(seen)
