"""Prometheus metrics of the IMAP gateway (default registry, served by the ops server)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SESSIONS_ACTIVE = Gauge("postmesh_imap_gw_sessions_active", "Open IMAP connections.")
SESSIONS_TOTAL = Counter(
    "postmesh_imap_gw_sessions_total", "IMAP connections accepted, by listener.", ["listener"]
)
COMMANDS_TOTAL = Counter(
    "postmesh_imap_gw_commands_total",
    "IMAP commands by name and tagged result (ok, no, bad).",
    ["command", "result"],
)
COMMAND_SECONDS = Histogram(
    "postmesh_imap_gw_command_duration_seconds",
    "Time from a command's last byte to its tagged response, by command.",
    ["command"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
AUTH_TOTAL = Counter(
    "postmesh_imap_gw_auth_total",
    "Authentication attempts by mechanism and result (ok, failed, error, limit).",
    ["mechanism", "result"],
)
MAILBOX_EVENTS = Counter(
    "postmesh_imap_gw_mailbox_events_total",
    "Mailbox events read from the bus (each marks the selected sessions of its user dirty).",
)
