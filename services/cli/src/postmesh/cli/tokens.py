"""Who the token is, and the domain-admin tokens the admin issues (auth's admin API)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from postmesh.cli import units
from postmesh.cli.client import segment
from postmesh.cli.context import Context

TOKEN_COLUMNS = [
    ("ID", "id"),
    ("ROLE", "role"),
    ("DOMAINS", "domains"),
    ("LABEL", "label"),
    ("CREATED", "created_at"),
    ("EXPIRES", "expires_at"),
]


def whoami(ctx: Context, args: argparse.Namespace) -> None:
    who = ctx.admin.call("GET", "/api/v1/whoami")
    if not ctx.json and not who["domains"]:
        who = {**who, "domains": "all"}
    ctx.show(who)


def tokens_list(ctx: Context, args: argparse.Namespace) -> None:
    ctx.show(ctx.admin.call("GET", "/api/v1/tokens"), TOKEN_COLUMNS)


def tokens_create(ctx: Context, args: argparse.Namespace) -> None:
    body: dict[str, Any] = {"domains": args.domain, "label": args.label}
    if args.expires_in is not None:
        body["expires_in_seconds"] = args.expires_in
    issued = ctx.admin.call("POST", "/api/v1/tokens", body)
    ctx.show(issued)
    if not ctx.json:
        print("store the token now: it is not shown again", file=sys.stderr)


def tokens_revoke(ctx: Context, args: argparse.Namespace) -> None:
    ctx.admin.call("DELETE", f"/api/v1/tokens/{segment(args.id)}")
    ctx.done(f"token {args.id} revoked", {"id": args.id, "revoked": True})


def register(sub: Any, leaf: Any) -> None:
    leaf(sub, "whoami", "the role and domains of the token in use", whoami)
    tokens = sub.add_parser("tokens", help="domain-admin tokens (admin role)").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    leaf(tokens, "list", "issued tokens (ids, never the tokens)", tokens_list)
    p = leaf(tokens, "create", "issue a domain-admin token; it is shown once", tokens_create)
    p.add_argument(
        "--domain", action="append", required=True, help="a domain it manages (repeatable)"
    )
    p.add_argument("--label", default="", help="who or what it is for")
    p.add_argument("--expires-in", type=units.duration, metavar="DURATION", help="e.g. 90d")
    leaf(
        tokens, "revoke", "revoke a token (refused from its next request)", tokens_revoke
    ).add_argument("id")
