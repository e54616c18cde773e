"""Shared plumbing for every Postmesh service: settings, logs, ops server, gRPC, bus, TLS."""
