"""Prometheus metrics of the POP3 gateway (default registry, served by the ops server)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

SESSIONS_ACTIVE = Gauge("postmesh_pop3_gw_sessions_active", "POP3 connections currently open.")
COMMANDS = Counter(
    "postmesh_pop3_gw_commands",
    "POP3 commands by keyword (unknown for unrecognised ones) and result (ok, err, tempfail).",
    ["command", "result"],
)
RETRIEVED_BYTES = Counter(
    "postmesh_pop3_gw_retrieved_bytes",
    "Octets of message content sent by RETR and TOP, dot-stuffing included.",
)
LOGINS = Counter(
    "postmesh_pop3_gw_logins",
    "Login attempts by mechanism (USER for USER/PASS) and result (ok, fail, tempfail).",
    ["mechanism", "result"],
)
