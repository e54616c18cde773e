"""The ``postmesh`` command: parsing, where the APIs and the token come from, exit statuses.

Exit status: 0 done; 1 the API refused or failed (its reason on stderr); 2 a usage error;
3 the API could not be reached."""

from __future__ import annotations

import argparse
import http
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from postmesh.cli import accounts, dkim, queue, tokens
from postmesh.cli.client import Api, ApiError, Unreachable
from postmesh.cli.context import Context, Handler, UsageError

DEFAULT_ADMIN_URL = "http://127.0.0.1:8080"
DEFAULT_QUEUE_URL = "http://127.0.0.1:8081"
# Where `make run` keeps the admin token (relative to the repository root).
DEV_TOKEN_FILE = Path(".postmesh/admin-token")

EPILOG = """\
environment:
  POSTMESH_ADMIN_URL         auth's admin API (default http://127.0.0.1:8080)
  POSTMESH_QUEUE_ADMIN_URL   delivery's queue admin API (default http://127.0.0.1:8081)
  POSTMESH_ADMIN_TOKEN       the bearer token (admin, or a domain admin's)
  POSTMESH_ADMIN_TOKEN_FILE  a file holding it
Flags win over the environment; with neither, .postmesh/admin-token (make run) is used
when it exists. Every command takes --help, --json and these options.
"""


def _global_options(parser: argparse.ArgumentParser, leaf: bool) -> None:
    """On the top level with defaults, and again on every command (without defaults, so
    ``postmesh users list --json`` and ``postmesh --json users list`` both work)."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if leaf else value

    g = parser.add_argument_group("connection and output")
    g.add_argument("--url", default=default(None), help="auth's admin API base URL")
    g.add_argument("--queue-url", default=default(None), help="delivery's queue admin API URL")
    g.add_argument("--token", default=default(None), help="bearer token (visible in ps: prefer the environment or --token-file)")  # fmt: skip
    g.add_argument("--token-file", default=default(None), type=Path, help="read the token from this file")  # fmt: skip
    g.add_argument("--json", action="store_true", default=default(False), help="JSON output, as the API answers")  # fmt: skip
    g.add_argument("--timeout", type=float, default=default(30.0), help="seconds per request (default 30)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="postmesh",
        description="Administer a Postmesh mail system over its admin REST APIs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(parser, leaf=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, leaf=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def leaf(subparsers: Any, name: str, help_: str, handler: Handler) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = subparsers.add_parser(
            name, help=help_, description=help_, parents=[common]
        )
        p.set_defaults(handler=handler)
        return p

    tokens.register(sub, leaf)
    accounts.register(sub, leaf)
    dkim.register(sub, leaf)
    queue.register(sub, leaf)
    return parser


def _token(args: argparse.Namespace) -> str:
    if args.token:
        return str(args.token)
    file: Path | None = args.token_file
    if file is None and os.environ.get("POSTMESH_ADMIN_TOKEN"):
        return os.environ["POSTMESH_ADMIN_TOKEN"].strip()
    if file is None and os.environ.get("POSTMESH_ADMIN_TOKEN_FILE"):
        file = Path(os.environ["POSTMESH_ADMIN_TOKEN_FILE"])
    if file is None and DEV_TOKEN_FILE.exists():
        file = DEV_TOKEN_FILE
    if file is None:
        raise UsageError("no token: set POSTMESH_ADMIN_TOKEN, or pass --token-file (or --token)")
    try:
        return file.read_text().strip()
    except OSError as e:
        raise UsageError(f"cannot read the token file {file}: {e.strerror}") from None


def _context(args: argparse.Namespace) -> Context:
    token = _token(args)
    admin_url = args.url or os.environ.get("POSTMESH_ADMIN_URL") or DEFAULT_ADMIN_URL
    queue_url = args.queue_url or os.environ.get("POSTMESH_QUEUE_ADMIN_URL") or DEFAULT_QUEUE_URL
    return Context(
        Api(admin_url, token, args.timeout), Api(queue_url, token, args.timeout), args.json
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        ctx = _context(args)
        args.handler(ctx, args)
    except UsageError as e:
        parser.exit(2, f"postmesh: error: {e}\n")
    except ApiError as e:
        phrase = http.HTTPStatus(e.status).phrase if e.status in http.HTTPStatus._value2member_map_ else ""  # fmt: skip
        if args.json:
            print(json.dumps({"error": {"status": e.status, "detail": str(e)}}), file=sys.stderr)
        print(f"postmesh: error: {e.status} {phrase}: {e}", file=sys.stderr)
        return 1
    except Unreachable as e:
        print(f"postmesh: error: {e}", file=sys.stderr)
        return 3
    except BrokenPipeError:  # `postmesh users list | head`
        return 0
    return 0
