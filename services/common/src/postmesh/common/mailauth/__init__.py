"""Mail authentication shared by smtp-edge (inbound checks) and delivery (signing): SPF
(RFC 7208), DKIM signing and verification (RFC 6376, RFC 8463), DMARC (RFC 7489), ARC (RFC 8617),
the Public Suffix List, the RFC 5322 author domain (``headers``) and the Authentication-Results
header (RFC 8601). One module per standard. DNS goes through :mod:`.dnsclient`."""
