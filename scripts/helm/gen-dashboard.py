"""Writes the chart's Grafana dashboards (deploy/helm/postmesh/files/dashboards/*.json): an
overview and one per protocol (SMTP, IMAP, POP3, delivery and its queue).

The JSON is generated so panel ids, grid positions and selectors stay consistent; edit this
file, run `uv run python scripts/helm/gen-dashboard.py`, and commit both. Every query is
evaluated against a real Prometheus scraping a running stack by
tests/integration/test_prometheus_live.py, so a panel must name metrics the services export.

Ratios use `(errors or all * 0) / all`: with no error series yet (labelled counters appear at
their first increment) the ratio is 0, which is what it means, rather than "No data". Panels of
counters that may never have been incremented (handler failures, content scans) add
`or vector(0)` for the same reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parents[2] / "deploy/helm/postmesh/files/dashboards"
NS = 'namespace="$namespace"'
DS = {"type": "prometheus", "uid": "${datasource}"}
SERVICES = ("smtp-edge", "imap-gw", "pop3-gw", "delivery", "store", "auth")
GRPC_SERVER_ERRORS = (
    'code=~".*(UNKNOWN|INTERNAL|UNAVAILABLE|DEADLINE_EXCEEDED|DATA_LOSS|'
    'RESOURCE_EXHAUSTED|UNIMPLEMENTED)"'
)

Panel = dict[str, Any]
Target = dict[str, Any]


def target(expr: str, legend: str, ref: str = "A") -> Target:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref}


def targets(*pairs: tuple[str, str]) -> list[Target]:
    return [target(e, legend, chr(ord("A") + i)) for i, (e, legend) in enumerate(pairs)]


def panel(title: str, unit: str, tgts: list[Target], desc: str) -> Panel:
    return {
        "type": "timeseries",
        "title": title,
        "description": desc,
        "datasource": DS,
        "fieldConfig": {"defaults": {"unit": unit, "custom": {"fillOpacity": 10}}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": tgts,
    }


def sel(extra: str = "") -> str:
    return "{" + NS + (", " + extra if extra else "") + "}"


def rate(metric: str, by: str = "", extra: str = "") -> str:
    agg = f"sum by ({by})" if by else "sum"
    return f"{agg} (rate({metric}{sel(extra)}[$__rate_interval]))"


def ratio(metric: str, by: str, part: str) -> str:
    """Share of ``metric``'s rate matching ``part``; 0, not empty, while no such series exists."""
    whole = rate(metric, by)
    return f"({rate(metric, by, part)} or {whole} * 0) / {whole}"


def quantiles(metric: str, by: str = "", qs: tuple[float, ...] = (0.5, 0.95, 0.99)) -> list[Target]:
    group = f"le{', ' + by if by else ''}"
    label = f"{{{{{by}}}}} " if by else ""
    return targets(
        *(
            (
                f"histogram_quantile({q}, sum by ({group}) "
                f"(rate({metric}_bucket{sel()}[$__rate_interval])))",
                f"{label}p{int(q * 100)}",
            )
            for q in qs
        )
    )


# ---- panels shared by several dashboards

UP = panel(
    "Replicas up",
    "short",
    targets((f'sum by (job) (up{{{NS}, job=~"$job"}})', "{{job}}")),
    "Scrapeable replicas per service (the ops port answers /metrics).",
)
BUS_FAILURES = panel(
    "Bus handler failures /s",
    "ops",
    targets(
        (
            rate("postmesh_bus_handler_failures_total", "job, topic") + " or vector(0)",
            "{{job}} {{topic}}",
        )
    ),
    "Records whose handler raised and will be retried (0 while none ever failed).",
)
CONSUMER_LAG = panel(
    "Delivery consumer lag",
    "short",
    targets(
        (
            "sum by (topic) (postmesh_bus_consumer_lag_records"
            + sel('group="postmesh-delivery"')
            + ")",
            "{{topic}}",
        )
    ),
    "Records postmesh-delivery has not handled yet (postmesh_bus_consumer_lag_records).",
)
QUEUE_DEPTH = panel(
    "Deferred queue",
    "short",
    targets(
        (f"max(postmesh_store_deferred_queue_depth{sel()})", "entries"),
        (f"max(postmesh_delivery_deferred_queue_due_entries{sel()})", "due now"),
    ),
    "Recipients waiting for a retry (one entry each; every store replica reports the same "
    "shared queue, hence max), and those due now.",
)
RECIPIENT_OUTCOMES = panel(
    "Recipients /s by outcome",
    "ops",
    targets((rate("postmesh_delivery_recipients_total", "outcome"), "{{outcome}}")),
    "delivered (local mailbox), relayed (remote MX), deferred (queued for retry), bounced (DSN).",
)
BOUNCE_RATIO = panel(
    "Bounce ratio",
    "percentunit",
    targets((ratio("postmesh_delivery_recipients_total", "", 'outcome="bounced"'), "bounced")),
    "Share of recipients bounced (the PostmeshHighBounceRate alert's measure).",
)
DELIVERY_LATENCY = panel(
    "Acceptance-to-delivery latency",
    "s",
    quantiles("postmesh_delivery_latency_seconds"),
    "From the SMTP edge's 250 to the end of delivery (postmesh_delivery_latency_seconds).",
)
SMTP_ACCEPTED = panel(
    "Messages accepted /s",
    "ops",
    targets((rate("postmesh_smtp_edge_messages_accepted_total", "listener"), "{{listener}}")),
    "Messages answered 250 after the bus acknowledged them, by listener (mx, submission, "
    "submissions).",
)
SMTP_REJECTED = panel(
    "Rejections /s",
    "ops",
    targets((rate("postmesh_smtp_edge_messages_rejected_total", "reason"), "{{reason}}")),
    "Rejected commands and messages, by reason.",
)
SMTP_LATENCY = panel(
    "Acceptance latency",
    "s",
    quantiles("postmesh_smtp_edge_accept_latency_seconds"),
    "End of DATA to the 250 reply: claim check and durable publish.",
)


def sessions(metric: str, what: str) -> Panel:
    return panel(
        f"{what} sessions",
        "short",
        targets(
            (f"sum({metric}{sel()})", "total"),
            (f"sum by (pod) ({metric}{sel()})", "{{pod}}"),
        ),
        f"Open {what} connections ({metric}).",
    )


OPEN_SESSIONS = panel(
    "Open sessions by protocol",
    "short",
    targets(
        (f"sum(postmesh_smtp_edge_active_sessions{sel()})", "SMTP"),
        (f"sum(postmesh_imap_gw_sessions_active{sel()})", "IMAP"),
        (f"sum(postmesh_pop3_gw_sessions_active{sel()})", "POP3"),
    ),
    "Connections open now on each edge, all replicas.",
)
LOGIN_FAILURES = panel(
    "Failed logins /s by protocol",
    "ops",
    targets(
        (
            rate("postmesh_auth_attempts_total", "protocol", 'result=~"fail|locked"'),
            "{{protocol}}",
        )
    ),
    "Password checks auth refused (wrong password, or lockout): the "
    "PostmeshAuthenticationFailures alert's measure.",
)
CERT_EXPIRY = panel(
    "TLS certificate lifetime left",
    "s",
    targets(
        (
            f"min by (job, certificate) (postmesh_tls_certificate_expiry_timestamp_seconds{sel()})"
            " - time()",
            "{{job}} {{certificate}}",
        )
    ),
    "Time until notAfter of the certificates the replicas loaded (edge: mail listeners, "
    "grpc: internal mTLS); PostmeshTlsCertificateExpiring fires under 14 days by default.",
)


def grpc_row() -> list[Panel]:
    count = "postmesh_grpc_server_handling_seconds_count"
    return [
        panel(
            "gRPC calls /s by method and code",
            "reqps",
            targets((rate(count, "method, code"), "{{method}} {{code}}")),
            "postmesh_grpc_server_handling_seconds_count on store and auth.",
        ),
        panel(
            "gRPC p95 latency by method",
            "s",
            quantiles("postmesh_grpc_server_handling_seconds", "method", (0.95,)),
            "95th percentile of postmesh_grpc_server_handling_seconds.",
        ),
        panel(
            "gRPC server-error ratio by method",
            "percentunit",
            targets((ratio(count, "method", GRPC_SERVER_ERRORS), "{{method}}")),
            "Calls that failed on the server's side (the PostmeshGrpcErrors alert's measure).",
        ),
    ]


Rows = list[tuple[str, list[Panel]]]

OVERVIEW: Rows = [
    ("Health", [UP, BUS_FAILURES, CERT_EXPIRY]),
    (
        "Mail flow",
        [SMTP_ACCEPTED, RECIPIENT_OUTCOMES, BOUNCE_RATIO, DELIVERY_LATENCY],
    ),
    ("Queues", [CONSUMER_LAG, QUEUE_DEPTH]),
    ("Clients", [OPEN_SESSIONS, LOGIN_FAILURES, SMTP_REJECTED]),
    ("Internal gRPC", grpc_row()),
]

SMTP: Rows = [
    (
        "Connections",
        [
            panel(
                "Connections /s by listener",
                "ops",
                targets((rate("postmesh_smtp_edge_sessions_total", "listener"), "{{listener}}")),
                "SMTP connections accepted (mx: port 25, submission: 587, submissions: 465).",
            ),
            panel(
                "Open sessions by listener",
                "short",
                targets(
                    (
                        f"sum by (listener) (postmesh_smtp_edge_active_sessions{sel()})",
                        "{{listener}}",
                    )
                ),
                "SMTP connections open now.",
            ),
            panel(
                "TLS sessions /s by version",
                "ops",
                targets(
                    (
                        rate("postmesh_smtp_edge_tls_sessions_total", "listener, version"),
                        "{{listener}} {{version}}",
                    )
                ),
                "STARTTLS and implicit-TLS handshakes completed, by protocol version.",
            ),
        ],
    ),
    (
        "Messages",
        [
            SMTP_ACCEPTED,
            panel(
                "Recipients accepted /s",
                "ops",
                targets(
                    (
                        rate("postmesh_smtp_edge_recipients_accepted_total", "listener"),
                        "{{listener}}",
                    )
                ),
                "RCPT TO commands answered 250.",
            ),
            SMTP_REJECTED,
        ],
    ),
    (
        "Latency and size",
        [
            SMTP_LATENCY,
            panel(
                "Message size",
                "bytes",
                quantiles("postmesh_smtp_edge_message_size_bytes", qs=(0.5, 0.95)),
                "Size of accepted messages, Received: header included.",
            ),
        ],
    ),
    (
        "Authentication and filtering",
        [
            panel(
                "AUTH /s by result",
                "ops",
                targets((rate("postmesh_smtp_edge_auth_total", "result"), "{{result}}")),
                "SMTP AUTH attempts on submission, by result.",
            ),
            panel(
                "Inbound SPF, DKIM, ARC and DMARC results /s",
                "ops",
                targets(
                    (
                        rate("postmesh_smtp_edge_auth_results_total", "method, result"),
                        "{{method}} {{result}}",
                    )
                ),
                "Message authentication results of mail arriving on the MX.",
            ),
            panel(
                "Content scans /s by action",
                "ops",
                targets(
                    (
                        rate("postmesh_smtp_edge_content_scans_total", "action") + " or vector(0)",
                        "{{action}}",
                    )
                ),
                "rspamd's verdicts (0 while content scanning is off).",
            ),
        ],
    ),
]

IMAP: Rows = [
    (
        "Sessions",
        [
            sessions("postmesh_imap_gw_sessions_active", "IMAP"),
            panel(
                "Connections /s by listener",
                "ops",
                targets((rate("postmesh_imap_gw_sessions_total", "listener"), "{{listener}}")),
                "IMAP connections accepted (imap: 143 with STARTTLS, imaps: 993).",
            ),
            panel(
                "Logins /s by mechanism and result",
                "ops",
                targets(
                    (
                        rate("postmesh_imap_gw_auth_total", "mechanism, result"),
                        "{{mechanism}} {{result}}",
                    )
                ),
                "LOGIN and AUTHENTICATE attempts (ok, failed, error, limit).",
            ),
        ],
    ),
    (
        "Commands",
        [
            panel(
                "Commands /s by command",
                "ops",
                targets((rate("postmesh_imap_gw_commands_total", "command"), "{{command}}")),
                "IMAP commands handled.",
            ),
            panel(
                "Responses /s by result",
                "ops",
                targets((rate("postmesh_imap_gw_commands_total", "result"), "{{result}}")),
                "Tagged responses: ok, no (refused) and bad (malformed).",
            ),
            panel(
                "p95 command latency by command",
                "s",
                quantiles("postmesh_imap_gw_command_duration_seconds", "command", (0.95,)),
                "From a command's last byte to its tagged response.",
            ),
        ],
    ),
    (
        "Mailbox events",
        [
            panel(
                "Mailbox events /s",
                "ops",
                targets((rate("postmesh_imap_gw_mailbox_events_total"), "events")),
                "Store events read from the bus: each wakes the user's selected sessions "
                "(IDLE, untagged EXISTS).",
            ),
        ],
    ),
]

POP3: Rows = [
    (
        "Sessions",
        [
            sessions("postmesh_pop3_gw_sessions_active", "POP3"),
            panel(
                "Logins /s by mechanism and result",
                "ops",
                targets(
                    (
                        rate("postmesh_pop3_gw_logins_total", "mechanism, result"),
                        "{{mechanism}} {{result}}",
                    )
                ),
                "USER/PASS and AUTH attempts (ok, fail, tempfail).",
            ),
        ],
    ),
    (
        "Commands",
        [
            panel(
                "Commands /s by command",
                "ops",
                targets((rate("postmesh_pop3_gw_commands_total", "command"), "{{command}}")),
                "POP3 commands handled.",
            ),
            panel(
                "Responses /s by result",
                "ops",
                targets((rate("postmesh_pop3_gw_commands_total", "result"), "{{result}}")),
                "+OK, -ERR and temporary failures.",
            ),
            panel(
                "Retrieved bytes /s",
                "Bps",
                targets((rate("postmesh_pop3_gw_retrieved_bytes_total"), "RETR and TOP")),
                "Message octets sent by RETR and TOP.",
            ),
        ],
    ),
]

DELIVERY: Rows = [
    ("Outcomes", [RECIPIENT_OUTCOMES, BOUNCE_RATIO, DELIVERY_LATENCY]),
    (
        "Bounces and remote delivery",
        [
            panel(
                "Bounces /s by status class",
                "ops",
                targets(
                    (rate("postmesh_delivery_bounces_total", "status_class"), "{{status_class}}")
                ),
                "Failed recipients by RFC 3463 status class and subject (5.1 address, 5.2 "
                "mailbox, 5.4 routing, 5.7 policy).",
            ),
            panel(
                "Remote attempts /s by outcome",
                "ops",
                targets(
                    (
                        rate("postmesh_delivery_remote_attempts_total", "outcome, source"),
                        "{{outcome}} ({{source}})",
                    )
                ),
                "Attempts to remote MXs, per recipient: first try (bus) or retry (queue).",
            ),
            panel(
                "Remote attempt latency",
                "s",
                quantiles("postmesh_delivery_relay_seconds", qs=(0.5, 0.95)),
                "One attempt to one domain: DNS, MTA-STS, connection and transaction.",
            ),
        ],
    ),
    (
        "Deferred queue",
        [
            QUEUE_DEPTH,
            panel(
                "Oldest deferred entry",
                "s",
                targets(
                    (
                        f"max(postmesh_delivery_deferred_queue_oldest_age_seconds{sel()})",
                        "age",
                    )
                ),
                "Age of the oldest recipient still waiting; entries bounce when they reach "
                "the queue lifetime.",
            ),
            panel(
                "Deferrals /s",
                "ops",
                targets((rate("postmesh_delivery_deferrals_total"), "deferred")),
                "Remote recipients put back in the queue (4xx or unreachable MX).",
            ),
        ],
    ),
    ("Bus", [CONSUMER_LAG, BUS_FAILURES]),
    (
        "Store",
        [
            panel(
                "Deliveries into mailboxes /s by result",
                "ops",
                targets((rate("postmesh_store_deliveries_total", "result"), "{{result}}")),
                "Deliver calls: new message stored, or duplicate (a redelivered bus record).",
            ),
            panel(
                "Quota refusals /s",
                "ops",
                targets((rate("postmesh_store_quota_refusals_total"), "refused")),
                "Deliver, Append and Copy refused by a full mailbox (bounced as 5.2.2).",
            ),
        ],
    ),
]


def namespace_variable(job: str) -> dict[str, Any]:
    query = f'label_values(up{{job="{job}"}}, namespace)'
    return {
        "name": "namespace",
        "label": "Namespace",
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": "namespace"},
        "definition": query,
        "refresh": 2,
        "current": {},
        "hide": 0,
    }


JOB_VARIABLE = {
    "name": "job",
    "label": "Service",
    "type": "custom",
    "query": ",".join(SERVICES),
    "multi": True,
    "includeAll": True,
    "allValue": "|".join(SERVICES),
    "current": {"text": "All", "value": "$__all"},
    "hide": 0,
}

# file stem: (uid, title, rows, job of the namespace variable, extra variables)
BOARDS: dict[str, tuple[str, str, Rows, str, list[dict[str, Any]]]] = {
    "postmesh-overview": (
        "postmesh-overview",
        "Postmesh overview",
        OVERVIEW,
        "store",
        [JOB_VARIABLE],
    ),
    "postmesh-smtp": ("postmesh-smtp", "Postmesh SMTP", SMTP, "smtp-edge", []),
    "postmesh-imap": ("postmesh-imap", "Postmesh IMAP", IMAP, "imap-gw", []),
    "postmesh-pop3": ("postmesh-pop3", "Postmesh POP3", POP3, "pop3-gw", []),
    "postmesh-delivery": (
        "postmesh-delivery",
        "Postmesh delivery and queue",
        DELIVERY,
        "delivery",
        [],
    ),
}


def layout(rows: Rows) -> list[Panel]:
    panels: list[Panel] = []
    next_id, y = 1, 0
    for title, row in rows:
        panels.append(
            {
                "type": "row",
                "title": title,
                "id": next_id,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id, y = next_id + 1, y + 1
        width = 24 // len(row)
        for i, p in enumerate(row):
            # Copies: a shared panel gets its own id and position on each board.
            panels.append(
                {**p, "id": next_id, "gridPos": {"h": 8, "w": width, "x": i * width, "y": y}}
            )
            next_id += 1
        y += 8
    return panels


def dashboard(stem: str) -> dict[str, Any]:
    uid, title, rows, job, extra = BOARDS[stem]
    links = [
        {"title": BOARDS[s][1], "type": "link", "url": f"/d/{BOARDS[s][0]}", "keepTime": True}
        for s in BOARDS
        if s != stem
    ]
    return {
        "uid": uid,
        "title": title,
        "tags": ["postmesh", "email"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": []},
        "links": links,
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                namespace_variable(job),
                *extra,
            ]
        },
        "panels": layout(rows),
    }


def dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON."""
    return {f"{stem}.json": dashboard(stem) for stem in BOARDS}


def main() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, board in dashboards().items():
        (OUT_DIR / name).write_text(json.dumps(board, indent=2) + "\n")


if __name__ == "__main__":
    main()
