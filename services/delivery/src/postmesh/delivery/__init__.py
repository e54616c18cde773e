"""Delivery service: consumes postmesh.inbound and delivers each recipient."""
