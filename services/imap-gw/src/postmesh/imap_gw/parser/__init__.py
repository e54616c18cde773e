"""IMAP command parsing: bytes in, typed command objects out (no I/O, no session state)."""

from postmesh.imap_gw.parser.commands import Command, parse_command
from postmesh.imap_gw.parser.errors import NotSupported, ParseError, UnknownCommand

__all__ = ["Command", "NotSupported", "ParseError", "UnknownCommand", "parse_command"]
