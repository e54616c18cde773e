"""Prometheus metrics of the store (per-RPC latency comes from common's gRPC interceptor)."""

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "postmesh_store_deliveries_total",
    "Deliver calls that stored a message or found it stored, by result (new, duplicate).",
    ["result"],
)
EXPUNGED = Counter("postmesh_store_expunged_messages_total", "Messages removed by Expunge.")
APPEND_BYTES = Counter("postmesh_store_append_bytes_total", "Message bytes received by Append.")
BLOB_UPLOAD_BYTES = Counter("postmesh_store_blob_upload_bytes_total", "Bytes received by PutBlob.")
CONTENT_BYTES = Counter(
    "postmesh_store_content_sent_bytes_total", "Message bytes streamed by GetMessageContent."
)
EVENT_PUBLISH_FAILURES = Counter(
    "postmesh_store_event_publish_failures_total",
    "Mailbox events that could not be published (logged and dropped).",
)
QUOTA_REFUSALS = Counter(
    "postmesh_store_quota_refusals_total",
    "Deliver, Append and Copy calls refused because the user's quota would be exceeded.",
)

# The janitor (janitor.py, leftovers.py).
JANITOR_REMOVED = Counter(
    "postmesh_store_janitor_removed_total",
    "Leftovers the janitor removed, by kind (upload_pins, blobs, tombstones, deliveries, "
    "intents, references, chunks, transitions, reservations, pages; unindexed: old contents "
    "indexed).",
    ["kind"],
)
JANITOR_PASS_SECONDS = Histogram(
    "postmesh_store_janitor_pass_seconds",
    "Duration of a janitor pass that completed.",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
)
JANITOR_LAST_SUCCESS = Gauge(
    "postmesh_store_janitor_last_success_timestamp_seconds",
    "Unix time at which the last janitor pass completed (0: none yet).",
)
JANITOR_FAILURES = Counter(
    "postmesh_store_janitor_failures_total",
    "Janitor passes that ended on an error (the next pass starts over).",
)

# Store replicas on one MongoDB-API database (mongodb/replicas.py).
REPLICAS_ALIVE = Gauge(
    "postmesh_store_replicas_alive",
    "Store replicas that said they were alive in the last 30 s (MongoDB backend).",
)
UNSAFE_REPLICAS = Gauge(
    "postmesh_store_unsafe_replicas",
    "1 while several store replicas run on FerretDB, which cannot keep their UIDs and quotas "
    "apart (ADR 37): run one there.",
)
