"""Mail authentication shared by smtp-edge (inbound checks) and delivery: SPF (RFC 7208),
DKIM verification (RFC 6376), DMARC (RFC 7489), ARC (RFC 8617), the Public Suffix List, and the
Authentication-Results header (RFC 8601). DNS goes through :mod:`.dnsclient`."""
