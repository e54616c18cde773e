"""Domains, users, quotas, aliases and catch-alls (auth's admin API)."""

from __future__ import annotations

import argparse
from typing import Any

from postmesh.cli import units
from postmesh.cli.client import segment
from postmesh.cli.context import Context, UsageError, add_password_options, read_password
from postmesh.cli.output import human_bytes


def _user(address: str) -> str:
    return f"/api/v1/users/{segment(address)}"


# -- domains --
def domains_list(ctx: Context, args: argparse.Namespace) -> None:
    ctx.show(ctx.admin.call("GET", "/api/v1/domains"), [("DOMAIN", "name")])


def domains_create(ctx: Context, args: argparse.Namespace) -> None:
    ctx.show(ctx.admin.call("POST", "/api/v1/domains", {"name": args.name}))


# -- users --
def users_list(ctx: Context, args: argparse.Namespace) -> None:
    users = ctx.admin.call("GET", "/api/v1/users", query={"domain": args.domain})
    ctx.show(users, [("ADDRESS", "address")])


def users_create(ctx: Context, args: argparse.Namespace) -> None:
    body = {"address": args.address, "password": read_password(args)}
    ctx.show(ctx.admin.call("POST", "/api/v1/users", body))


def users_show(ctx: Context, args: argparse.Namespace) -> None:
    ctx.show(ctx.admin.call("GET", _user(args.address)))


def users_disable(ctx: Context, args: argparse.Namespace) -> None:
    ctx.show(ctx.admin.call("POST", _user(args.address) + "/disable"))


def users_enable(ctx: Context, args: argparse.Namespace) -> None:
    ctx.show(ctx.admin.call("POST", _user(args.address) + "/enable"))


def users_password(ctx: Context, args: argparse.Namespace) -> None:
    password = read_password(args)
    ctx.admin.call("PUT", _user(args.address) + "/password", {"password": password})
    ctx.done(f"password of {args.address} changed", {"address": args.address, "changed": True})


def users_delete(ctx: Context, args: argparse.Namespace) -> None:
    ctx.admin.call("DELETE", _user(args.address))
    ctx.done(
        f"user {args.address} deleted (its mail stays in the store)",
        {"address": args.address, "deleted": True},
    )


# -- quotas --
def _quota_rows(q: dict[str, Any]) -> list[dict[str, Any]]:
    def limit(n: int, fmt: Any) -> str:
        return "unlimited" if n == 0 else str(fmt(n))

    return [
        {
            "resource": "storage",
            "used": human_bytes(q["storage_used_bytes"]),
            "limit": limit(q["storage_limit_bytes"], human_bytes),
        },
        {
            "resource": "messages",
            "used": q["messages_used"],
            "limit": limit(q["message_limit"], int),
        },
    ]


def _show_quota(ctx: Context, q: dict[str, Any]) -> None:
    if ctx.json:
        ctx.show(q)
    else:
        ctx.show(_quota_rows(q), [("RESOURCE", "resource"), ("USED", "used"), ("LIMIT", "limit")])


def quota_show(ctx: Context, args: argparse.Namespace) -> None:
    _show_quota(ctx, ctx.admin.call("GET", _user(args.address) + "/quota"))


def quota_set(ctx: Context, args: argparse.Namespace) -> None:
    if args.storage is None and args.messages is None:
        raise UsageError("quota set needs --storage and/or --messages")
    storage, messages = args.storage, args.messages
    if storage is None or messages is None:  # keep the limit not given
        current = ctx.admin.call("GET", _user(args.address) + "/quota")
        storage = current["storage_limit_bytes"] if storage is None else storage
        messages = current["message_limit"] if messages is None else messages
    body = {"storage_limit_bytes": storage, "message_limit": messages}
    _show_quota(ctx, ctx.admin.call("PUT", _user(args.address) + "/quota", body))


# -- aliases --
ALIAS_COLUMNS = [("ALIAS", "address"), ("TARGETS", "targets")]


def _alias(address: str) -> str:
    return f"/api/v1/aliases/{segment(address)}"


def aliases_list(ctx: Context, args: argparse.Namespace) -> None:
    ctx.show(ctx.admin.call("GET", "/api/v1/aliases", query={"domain": args.domain}), ALIAS_COLUMNS)


def aliases_create(ctx: Context, args: argparse.Namespace) -> None:
    body = {"address": args.address, "targets": args.targets}
    ctx.show(ctx.admin.call("POST", "/api/v1/aliases", body))


def aliases_show(ctx: Context, args: argparse.Namespace) -> None:
    ctx.show(ctx.admin.call("GET", _alias(args.address)))


def aliases_set(ctx: Context, args: argparse.Namespace) -> None:
    ctx.show(ctx.admin.call("PUT", _alias(args.address), {"targets": args.targets}))


def aliases_delete(ctx: Context, args: argparse.Namespace) -> None:
    ctx.admin.call("DELETE", _alias(args.address))
    ctx.done(f"alias {args.address} deleted", {"address": args.address, "deleted": True})


# -- catch-all --
def _catch_all(domain: str) -> str:
    return f"/api/v1/domains/{segment(domain)}/catch-all"


def catch_all_show(ctx: Context, args: argparse.Namespace) -> None:
    ctx.show(ctx.admin.call("GET", _catch_all(args.domain)))


def catch_all_set(ctx: Context, args: argparse.Namespace) -> None:
    ctx.show(ctx.admin.call("PUT", _catch_all(args.domain), {"target": args.target}))


def catch_all_delete(ctx: Context, args: argparse.Namespace) -> None:
    ctx.admin.call("DELETE", _catch_all(args.domain))
    ctx.done(f"catch-all of {args.domain} removed", {"domain": args.domain, "deleted": True})


def register(sub: Any, leaf: Any) -> None:
    """``leaf(subparsers, name, help, handler)`` adds one command with the common options."""
    domains = sub.add_parser("domains", help="local domains").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    leaf(domains, "list", "list the domains this token manages", domains_list)
    p = leaf(
        domains, "create", "add a local domain (admin role; DKIM keys are made)", domains_create
    )
    p.add_argument("name", help="domain name, IDN allowed (stored as A-labels)")

    users = sub.add_parser("users", help="mail accounts").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = leaf(users, "list", "list users", users_list)
    p.add_argument("--domain", help="only this domain's users")
    p = leaf(users, "create", "create a user (password asked, or --password-stdin)", users_create)
    p.add_argument("address")
    add_password_options(p)
    for name, help_, fn in (
        ("show", "whether a user exists and is disabled", users_show),
        ("disable", "refuse the user's logins and mail (the account stays)", users_disable),
        ("enable", "undo disable", users_enable),
        ("delete", "delete the account (its mail stays in the store)", users_delete),
    ):
        leaf(users, name, help_, fn).add_argument("address")
    p = leaf(users, "password", "set a new password (effective at once everywhere)", users_password)
    p.add_argument("address")
    add_password_options(p)

    quota = sub.add_parser("quota", help="per-user quotas").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    leaf(quota, "show", "usage and limits of a user", quota_show).add_argument("address")
    p = leaf(quota, "set", "set limits (0 = unlimited); an unset one is kept", quota_set)
    p.add_argument("address")
    p.add_argument("--storage", type=units.size, help="bytes, or with K, M, G, T (binary): 2G")
    p.add_argument("--messages", type=units.count, help="number of messages")

    aliases = sub.add_parser("aliases", help="aliases (one address to many)").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = leaf(aliases, "list", "list aliases", aliases_list)
    p.add_argument("--domain", help="only this domain's aliases")
    p = leaf(aliases, "create", "create an alias", aliases_create)
    p.add_argument("address")
    p.add_argument(
        "targets", nargs="+", metavar="TARGET", help="local users, aliases, remote addresses"
    )
    leaf(aliases, "show", "an alias's targets", aliases_show).add_argument("address")
    p = leaf(aliases, "set", "replace an alias's targets", aliases_set)
    p.add_argument("address")
    p.add_argument("targets", nargs="+", metavar="TARGET")
    leaf(aliases, "delete", "delete an alias", aliases_delete).add_argument("address")

    catch_all = sub.add_parser("catch-all", help="a domain's catch-all address").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    leaf(catch_all, "show", "the catch-all target of a domain", catch_all_show).add_argument(
        "domain"
    )
    p = leaf(catch_all, "set", "send unmatched local parts of DOMAIN to TARGET", catch_all_set)
    p.add_argument("domain")
    p.add_argument("target")
    leaf(catch_all, "delete", "remove a domain's catch-all", catch_all_delete).add_argument(
        "domain"
    )
