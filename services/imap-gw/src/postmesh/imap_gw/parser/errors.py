"""Errors the parser raises; the session turns each into a tagged BAD (RFC 9051 §7.1.3)."""

from __future__ import annotations


class ParseError(Exception):
    """Syntactically invalid client input.

    ``tag`` is the command's tag when it was read before the error (else the reply is untagged),
    ``code`` an optional response code such as ``CLIENTBUG``.
    """

    def __init__(self, message: str, *, tag: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.tag = tag
        self.code = code
        # A SEARCH ... RETURN (SAVE) that fails empties the saved result "$" (RFC 5182 §2.1).
        self.clears_saved = False


class UnknownCommand(ParseError):
    """A command name this server does not implement."""


class NotSupported(ParseError):
    """A standard command this server does not implement yet: NO [CANNOT], not BAD."""
