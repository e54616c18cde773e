"""Prometheus metrics of the store (per-RPC latency comes from common's gRPC interceptor)."""

from prometheus_client import Counter

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
