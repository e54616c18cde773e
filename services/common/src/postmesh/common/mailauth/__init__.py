"""Mail authentication shared by smtp-edge (verification) and delivery (signing).

One module per standard, as Mox does: ``dkim`` (RFC 6376, RFC 8463), ``headers`` (the RFC 5322
author domain that DKIM signing and DMARC alignment both need).
"""
