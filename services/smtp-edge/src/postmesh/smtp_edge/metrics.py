"""Prometheus metrics of the SMTP edge (served by the ops server)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SESSIONS = Counter(
    "postmesh_smtp_edge_sessions_total", "SMTP connections accepted, by listener.", ["listener"]
)
ACTIVE = Gauge(
    "postmesh_smtp_edge_active_sessions", "Open SMTP connections, by listener.", ["listener"]
)
TLS = Counter(
    "postmesh_smtp_edge_tls_sessions_total",
    "TLS sessions established (STARTTLS or implicit TLS), by listener and protocol version.",
    ["listener", "version"],
)
RECIPIENTS = Counter(
    "postmesh_smtp_edge_recipients_accepted_total",
    "RCPT TO commands answered 250, by listener.",
    ["listener"],
)
ACCEPTED = Counter(
    "postmesh_smtp_edge_messages_accepted_total",
    "Messages queued on the bus and answered 250, by listener.",
    ["listener"],
)
REJECTED = Counter(
    "postmesh_smtp_edge_messages_rejected_total",
    "Rejected commands and messages, by reason (unknown_user, relay_denied, too_big, "
    "bare_newline, bad_address, too_many_recipients, auth_required, temp_failure, "
    "too_many_connections, rate_limited, ...).",
    ["reason"],
)
AUTH = Counter("postmesh_smtp_edge_auth_total", "AUTH attempts, by result.", ["result"])
MESSAGE_SIZE = Histogram(
    "postmesh_smtp_edge_message_size_bytes",
    "Size of accepted messages, Received: header included.",
    buckets=(1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864),
)
ACCEPT_LATENCY = Histogram(
    "postmesh_smtp_edge_accept_latency_seconds",
    "From the end of DATA to the 250 reply: claim check (if any) and durable publish.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
AUTH_RESULTS = Counter(
    "postmesh_smtp_edge_auth_results_total",
    "Inbound SPF (MAIL FROM), DKIM (per signature), ARC and DMARC results on the MX.",
    ["method", "result"],
)
CONTENT_SCANS = Counter(
    "postmesh_smtp_edge_content_scans_total",
    "Messages scanned by rspamd, by its action (reject, soft reject, greylist, rewrite subject, "
    "add header, no action) or error.",
    ["action"],
)
CONTENT_SCAN_SECONDS = Histogram(
    "postmesh_smtp_edge_content_scan_seconds",
    "Time rspamd took to answer (or to fail).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RECIPIENT_CACHE = Counter(
    "postmesh_smtp_edge_recipient_cache_total",
    "RCPT look-ups answered from the edge's memory (hit) or asked of auth (miss); ADR 43.",
    ["result"],
)
