"""The maildrop as one POP3 session sees it: numbers fixed at login, deletion marks, totals."""

from __future__ import annotations

from dataclasses import dataclass

from postmesh.pop3_gw.backend import DELETED, SEEN, Maildrop, MessageInfo


class NoSuchMessage(LookupError):
    pass


class MessageDeleted(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class Totals:
    count: int
    octets: int


class SessionMaildrop:
    """RFC 1939 §5: messages are numbered 1..n when the session enters TRANSACTION and keep
    their numbers; messages marked deleted may not be referred to again until RSET, and are
    counted in no total."""

    def __init__(self, maildrop: Maildrop) -> None:
        self.uidvalidity = maildrop.uidvalidity
        self._messages = maildrop.messages
        self._deleted: set[int] = set()
        self._retrieved: set[int] = set()

    def get(self, number: int) -> MessageInfo:
        if not 1 <= number <= len(self._messages):
            raise NoSuchMessage(number)
        if number in self._deleted:
            raise MessageDeleted(number)
        return self._messages[number - 1]

    @property
    def count(self) -> int:
        """Messages numbered at login, deleted or not."""
        return len(self._messages)

    def visible(self) -> list[tuple[int, MessageInfo]]:
        return [
            (n, info) for n, info in enumerate(self._messages, start=1) if n not in self._deleted
        ]

    def totals(self) -> Totals:
        live = self.visible()
        return Totals(len(live), sum(info.size for _, info in live))

    def unique_id(self, info: MessageInfo) -> str:
        """RFC 1939 §7 unique-id: stable across sessions as long as UIDVALIDITY holds, and
        within 0x21-0x7E."""
        return f"{self.uidvalidity}.{info.uid}"

    def is_deleted(self, number: int) -> bool:
        return number in self._deleted

    def mark_deleted(self, number: int) -> MessageInfo:
        info = self.get(number)
        self._deleted.add(number)
        return info

    def mark_retrieved(self, number: int) -> None:
        self._retrieved.add(number)

    def reset(self) -> None:
        """RSET (RFC 1939 §5): deletions undone, and the \\Seen of the messages retrieved so far,
        as Dovecot does: the session is back where it started."""
        self._deleted.clear()
        self._retrieved.clear()

    @property
    def deleted_count(self) -> int:
        return len(self._deleted)

    def deleted_uids(self) -> list[int]:
        return sorted(self._messages[n - 1].uid for n in self._deleted)

    def newly_deleted_uids(self) -> list[int]:
        """Marked here and not already \\Deleted in the store: what a failed UPDATE must unflag."""
        return sorted(
            self._messages[n - 1].uid
            for n in self._deleted
            if DELETED not in self._messages[n - 1].flags
        )

    def uids_to_mark_seen(self) -> list[int]:
        return sorted(
            self._messages[n - 1].uid
            for n in self._retrieved - self._deleted
            if SEEN not in self._messages[n - 1].flags
        )
