"""Kafka topic names (payloads are in proto/postmesh/api/events/v1/events.proto)."""

INBOUND = "postmesh.inbound"  # key: queue id; InboundMessage
MAILBOX_EVENTS = "postmesh.mailbox-events"  # key: user; MailboxEvent
DELIVERY_EVENTS = "postmesh.delivery-events"  # key: queue id; DeliveryEvent

ALL = (INBOUND, MAILBOX_EVENTS, DELIVERY_EVENTS)

# Records nothing depends on for correctness (ADR 50): a mailbox event tells sessions to look
# (they resynchronise from MODSEQ when one is missed), a delivery event is a trace step. The
# embedded bus commits them without an fsync; the inbound mail is always durable.
HINTS = frozenset({MAILBOX_EVENTS, DELIVERY_EVENTS})
