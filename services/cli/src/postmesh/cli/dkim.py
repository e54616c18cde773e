"""DKIM keys and the DNS records a domain needs (auth's admin API)."""

from __future__ import annotations

import argparse
from typing import Any

from postmesh.cli import units
from postmesh.cli.client import segment
from postmesh.cli.context import Context

KEY_COLUMNS = [
    ("SELECTOR", "selector"),
    ("ALGORITHM", "algorithm"),
    ("STATE", "state"),
    ("CREATED", "created_at"),
    ("ACTIVATES", "activates_at"),
    ("SUPERSEDED", "superseded_at"),
]


def _domain(name: str) -> str:
    return f"/api/v1/domains/{segment(name)}"


def keys_list(ctx: Context, args: argparse.Namespace) -> None:
    ctx.show(ctx.admin.call("GET", _domain(args.domain) + "/dkim-keys"), KEY_COLUMNS)


def keys_rotate(ctx: Context, args: argparse.Namespace) -> None:
    body: dict[str, Any] = {}
    if args.algorithm:
        body["algorithm"] = args.algorithm
    if args.activate_in is not None:
        body["activate_in_seconds"] = args.activate_in
    added = ctx.admin.call("POST", _domain(args.domain) + "/dkim-keys/rotate", body)
    ctx.show(added, [*KEY_COLUMNS, ("DNS NAME", "dns_name")])


def keys_delete(ctx: Context, args: argparse.Namespace) -> None:
    ctx.admin.call("DELETE", _domain(args.domain) + f"/dkim-keys/{segment(args.selector)}")
    ctx.done(
        f"DKIM key {args.selector} of {args.domain} deleted",
        {"domain": args.domain, "selector": args.selector, "deleted": True},
    )


def dns_records(ctx: Context, args: argparse.Namespace) -> None:
    records = ctx.admin.call("GET", _domain(args.domain) + "/dns-records")
    ctx.show(records, [("NAME", "name"), ("TYPE", "type"), ("VALUE", "value"), ("NOTE", "note")])


def register(sub: Any, leaf: Any) -> None:
    dkim = sub.add_parser("dkim", help="DKIM keys and DNS records").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    leaf(dkim, "list", "a domain's DKIM keys and their state", keys_list).add_argument("domain")
    p = leaf(
        dkim,
        "rotate",
        "new keys under new selectors; the old ones stay published until retired",
        keys_rotate,
    )
    p.add_argument("domain")
    p.add_argument("--algorithm", choices=["rsa-sha256", "ed25519-sha256"], help="only this one")
    p.add_argument(
        "--activate-in",
        type=units.duration,
        metavar="DURATION",
        help="when the new key signs (e.g. 1d; 0 = now, for a compromised key); default: "
        "the server's POSTMESH_DKIM_ROTATION_ACTIVATION_SECONDS",
    )
    p = leaf(dkim, "delete", "delete a key that no longer signs", keys_delete)
    p.add_argument("domain")
    p.add_argument("selector")
    leaf(
        dkim, "dns-records", "the MX, SPF, DKIM, DMARC, MTA-STS and TLS-RPT records", dns_records
    ).add_argument("domain")
