"""Kafka topic names (payloads are in proto/postmesh/api/events/v1/events.proto)."""

INBOUND = "postmesh.inbound"  # key: queue id; InboundMessage
MAILBOX_EVENTS = "postmesh.mailbox-events"  # key: user; MailboxEvent
DELIVERY_EVENTS = "postmesh.delivery-events"  # key: queue id; DeliveryEvent

ALL = (INBOUND, MAILBOX_EVENTS, DELIVERY_EVENTS)
