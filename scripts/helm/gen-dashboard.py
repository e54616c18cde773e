"""Writes the chart's Grafana dashboard (deploy/helm/postmesh/files/dashboards/*.json).

The JSON is generated so panel ids and grid positions stay consistent; edit this file, run
`uv run python scripts/helm/gen-dashboard.py`, and commit both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = (
    Path(__file__).resolve().parents[2]
    / "deploy/helm/postmesh/files/dashboards/postmesh-overview.json"
)
NS = 'namespace="$namespace"'
DS = {"type": "prometheus", "uid": "${datasource}"}


def target(expr: str, legend: str, ref: str = "A") -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref}


def panel(title: str, unit: str, targets: list[dict[str, Any]], desc: str) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": title,
        "description": desc,
        "datasource": DS,
        "fieldConfig": {"defaults": {"unit": unit, "custom": {"fillOpacity": 10}}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": targets,
    }


def quantiles(metric: str, by: str = "") -> list[dict[str, Any]]:
    group = f"le{', ' + by if by else ''}"
    label = f"{{{{{by}}}}} " if by else ""
    return [
        target(
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{NS}}}[$__rate_interval])))",
            f"{label}p{int(q * 100)}",
            ref,
        )
        for q, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))
    ]


def rate(metric: str, by: str, extra: str = "") -> str:
    sel = NS + (", " + extra if extra else "")
    agg = f"sum by ({by})" if by else "sum"
    return f"{agg} (rate({metric}{{{sel}}}[$__rate_interval]))"


BOUNCED = 'outcome="bounced"'


ROWS: list[tuple[str, list[dict[str, Any]]]] = [
    (
        "Health",
        [
            panel(
                "Replicas up",
                "short",
                [target(f'sum by (job) (up{{{NS}, job=~"$job"}})', "{{job}}")],
                "Scrapeable replicas per service (the ops port answers /metrics).",
            ),
            panel(
                "Bus handler failures /s",
                "ops",
                [
                    target(
                        rate("postmesh_bus_handler_failures_total", "job, topic"),
                        "{{job}} {{topic}}",
                    )
                ],
                "Records whose handler raised and will be retried (postmesh_bus_handler_failures_total).",
            ),
            panel(
                "Delivery consumer lag",
                "short",
                [
                    target(
                        'sum by (topic) (postmesh_bus_consumer_lag_records{group="postmesh-delivery"})',
                        "{{topic}}",
                    )
                ],
                "Records postmesh-delivery has not handled yet (postmesh_bus_consumer_lag_records).",
            ),
        ],
    ),
    (
        "SMTP",
        [
            panel(
                "Messages accepted /s",
                "ops",
                [
                    target(
                        rate("postmesh_smtp_edge_messages_accepted_total", "listener"),
                        "{{listener}}",
                    )
                ],
                "Messages answered 250 after Kafka acknowledged them, by listener (mx, submission, submissions).",
            ),
            panel(
                "Rejections /s",
                "ops",
                [
                    target(
                        rate("postmesh_smtp_edge_messages_rejected_total", "reason"), "{{reason}}"
                    )
                ],
                "Rejected commands and messages, by reason.",
            ),
            panel(
                "Acceptance latency",
                "s",
                quantiles("postmesh_smtp_edge_accept_latency_seconds"),
                "End of DATA to the 250 reply: claim check and durable publish.",
            ),
        ],
    ),
    (
        "IMAP and POP3",
        [
            panel(
                "IMAP sessions",
                "short",
                [
                    target(f"sum(postmesh_imap_gw_sessions_active{{{NS}}})", "total"),
                    target(
                        f"sum by (pod) (postmesh_imap_gw_sessions_active{{{NS}}})", "{{pod}}", "B"
                    ),
                ],
                "Open IMAP connections (postmesh_imap_gw_sessions_active).",
            ),
            panel(
                "POP3 sessions",
                "short",
                [
                    target(f"sum(postmesh_pop3_gw_sessions_active{{{NS}}})", "total"),
                    target(
                        f"sum by (pod) (postmesh_pop3_gw_sessions_active{{{NS}}})", "{{pod}}", "B"
                    ),
                ],
                "Open POP3 connections (postmesh_pop3_gw_sessions_active).",
            ),
        ],
    ),
    (
        "Delivery",
        [
            panel(
                "Recipients /s by outcome",
                "ops",
                [target(rate("postmesh_delivery_recipients_total", "outcome"), "{{outcome}}")],
                "delivered (local mailbox), relayed (remote MX), bounced (DSN sent).",
            ),
            panel(
                "Bounce ratio",
                "percentunit",
                [
                    target(
                        rate("postmesh_delivery_recipients_total", "", BOUNCED)
                        + " / "
                        + rate("postmesh_delivery_recipients_total", ""),
                        "bounced",
                    )
                ],
                "Share of recipients bounced.",
            ),
            panel(
                "Acceptance-to-delivery latency",
                "s",
                quantiles("postmesh_delivery_latency_seconds"),
                "From the SMTP edge's 250 to the end of delivery (postmesh_delivery_latency_seconds).",
            ),
        ],
    ),
    (
        "Internal gRPC",
        [
            panel(
                "Calls /s by method and code",
                "reqps",
                [
                    target(
                        rate("postmesh_grpc_server_handling_seconds_count", "method, code"),
                        "{{method}} {{code}}",
                    )
                ],
                "postmesh_grpc_server_handling_seconds_count on store and auth.",
            ),
            panel(
                "p95 latency by method",
                "s",
                [
                    target(
                        "histogram_quantile(0.95, sum by (le, method) "
                        f"(rate(postmesh_grpc_server_handling_seconds_bucket{{{NS}}}[$__rate_interval])))",
                        "{{method}}",
                    )
                ],
                "95th percentile of postmesh_grpc_server_handling_seconds.",
            ),
            panel(
                "Server-error ratio by method",
                "percentunit",
                [
                    target(
                        rate(
                            "postmesh_grpc_server_handling_seconds_count",
                            "method",
                            'code=~".*(UNKNOWN|INTERNAL|UNAVAILABLE|DEADLINE_EXCEEDED|DATA_LOSS|RESOURCE_EXHAUSTED|UNIMPLEMENTED)"',
                        )
                        + " / "
                        + rate("postmesh_grpc_server_handling_seconds_count", "method"),
                        "{{method}}",
                    )
                ],
                "Calls that failed on the server's side.",
            ),
        ],
    ),
]


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    next_id, y = 1, 0
    for title, row in ROWS:
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
            p["id"] = next_id
            p["gridPos"] = {"h": 8, "w": width, "x": i * width, "y": y}
            panels.append(p)
            next_id += 1
        y += 8
    return {
        "uid": "postmesh-overview",
        "title": "Postmesh overview",
        "tags": ["postmesh", "email"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": []},
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
                {
                    "name": "namespace",
                    "label": "Namespace",
                    "type": "query",
                    "datasource": DS,
                    "query": {
                        "query": 'label_values(up{job="store"}, namespace)',
                        "refId": "namespace",
                    },
                    "definition": 'label_values(up{job="store"}, namespace)',
                    "refresh": 2,
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "job",
                    "label": "Service",
                    "type": "custom",
                    "query": "smtp-edge,imap-gw,pop3-gw,delivery,store,auth",
                    "multi": True,
                    "includeAll": True,
                    "allValue": "smtp-edge|imap-gw|pop3-gw|delivery|store|auth",
                    "current": {"text": "All", "value": "$__all"},
                    "hide": 0,
                },
            ]
        },
        "panels": panels,
    }


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(dashboard(), indent=2) + "\n")


if __name__ == "__main__":
    main()
