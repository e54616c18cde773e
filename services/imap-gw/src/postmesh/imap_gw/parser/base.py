"""The base of every typed command, apart from the command table so command modules can import it
without importing the table (which imports them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Command:
    tag: str
    name: ClassVar[str] = ""

    @property
    def label(self) -> str:
        """The command as a metrics label (a fixed, small set of values)."""
        return self.name
