"""What every command gets: the two APIs, the output mode, and how to read a secret."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from postmesh.cli.client import Api
from postmesh.cli.output import Column, emit


class UsageError(Exception):
    """A mistake on the command line the parser cannot see (exit status 2)."""


@dataclass
class Context:
    admin: Api  # auth's admin API
    queue: Api  # delivery's queue admin API
    json: bool
    out: TextIO = field(default_factory=lambda: sys.stdout)

    def show(self, data: Any, columns: Sequence[Column] | None = None) -> None:
        emit(data, self.json, columns, self.out)

    def done(self, message: str, data: dict[str, Any]) -> None:
        """A command whose API answer is empty (204): a line for people, an object for jq."""
        if self.json:
            emit(data, True, out=self.out)
        else:
            self.out.write(message + "\n")


Handler = Callable[[Context, argparse.Namespace], None]


def add_password_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input (for scripts)",
    )
    group.add_argument(
        "--password",
        help="the password (visible to other users in the process list; prefer a prompt or "
        "--password-stdin)",
    )


def read_password(args: argparse.Namespace) -> str:
    if args.password is not None:
        return str(args.password)
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise UsageError("no password: use --password-stdin, or run in a terminal to be asked")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise UsageError("the passwords differ")
    return first
