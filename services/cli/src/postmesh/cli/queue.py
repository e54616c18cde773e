"""The deferred delivery queue and message traces (delivery's queue admin API, admin role)."""

from __future__ import annotations

import argparse
from typing import Any

from postmesh.cli.client import segment
from postmesh.cli.context import Context, UsageError

ENTRY_COLUMNS = [
    ("QUEUE ID", "queue_id"),
    ("RECIPIENT", "recipient"),
    ("SENDER", "sender"),
    ("ATTEMPTS", "attempts"),
    ("NEXT ATTEMPT", "next_attempt_at"),
    ("LAST ERROR", "last_error"),
]
STEP_COLUMNS = [
    ("AT", "at"),
    ("STEP", "step"),
    ("RECIPIENT", "recipient"),
    ("ATTEMPT", "attempt"),
    ("REPLY", "reply"),
    ("REMOTE MTA", "remote_mta"),
]


def _entry(queue_id: str) -> str:
    return f"/api/v1/queue/{segment(queue_id)}"


def queue_list(ctx: Context, args: argparse.Namespace) -> None:
    """Every page (as postqueue -p), or the first --limit entries."""
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    entries: list[dict[str, Any]] = []
    token = ""
    while True:
        size = 1000 if args.limit is None else min(1000, args.limit - len(entries))
        page = ctx.queue.call(
            "GET", "/api/v1/queue", query={"page_token": token, "page_size": size}
        )
        entries += page["entries"]
        token = page["next_page_token"]
        if not token or (args.limit is not None and len(entries) >= args.limit):
            break
    ctx.show(entries, ENTRY_COLUMNS)


def queue_show(ctx: Context, args: argparse.Namespace) -> None:
    ctx.show(
        ctx.queue.call("GET", _entry(args.queue_id)), [*ENTRY_COLUMNS, ("HELD BY", "lease_owner")]
    )


def _action(ctx: Context, answer: dict[str, Any]) -> None:
    if ctx.json:
        ctx.show(answer)
        return
    ctx.out.write(
        f"{answer['action']}: {len(answer['entries'])} entr{'y' if len(answer['entries']) == 1 else 'ies'}\n"
    )
    ctx.show(answer["entries"], ENTRY_COLUMNS)


def queue_retry(ctx: Context, args: argparse.Namespace) -> None:
    query = {"recipient": args.recipient}
    _action(ctx, ctx.queue.call("POST", _entry(args.queue_id) + "/retry", query=query))


def queue_delete(ctx: Context, args: argparse.Namespace) -> None:
    query = {"recipient": args.recipient, "bounce": args.bounce or None}
    _action(ctx, ctx.queue.call("DELETE", _entry(args.queue_id), query=query))


def queue_trace(ctx: Context, args: argparse.Namespace) -> None:
    trace = ctx.queue.call("GET", f"/api/v1/trace/{segment(args.queue_id)}")
    if ctx.json:
        ctx.show(trace)
        return
    ctx.out.write(
        f"{trace['queue_id']} from {trace['sender'] or '<>'} received {trace['received_at']}\n"
    )
    ctx.show(trace["steps"], STEP_COLUMNS)
    if trace["queued"]:
        ctx.out.write("still queued:\n")
        ctx.show(trace["queued"], ENTRY_COLUMNS)


def register(sub: Any, leaf: Any) -> None:
    queue = sub.add_parser(
        "queue", help="the deferred delivery queue (admin role; --queue-url)"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    p = leaf(queue, "list", "deferred entries, one per recipient (as postqueue -p)", queue_list)
    p.add_argument("--limit", type=int, help="at most this many entries")
    leaf(queue, "show", "one message's entries", queue_show).add_argument("queue_id")
    p = leaf(queue, "retry", "attempt now (as postqueue -i)", queue_retry)
    p.add_argument("queue_id")
    p.add_argument("--recipient", help="only this recipient's entry")
    p = leaf(queue, "delete", "remove from the queue (as postsuper -d)", queue_delete)
    p.add_argument("queue_id")
    p.add_argument("--recipient", help="only this recipient's entry")
    p.add_argument("--bounce", action="store_true", help="send the sender a failure report first")
    leaf(
        queue, "trace", "what happened to a message (queue id of the 250 reply)", queue_trace
    ).add_argument("queue_id")
