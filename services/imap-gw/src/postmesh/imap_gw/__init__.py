"""IMAP gateway: IMAP4rev2 (RFC 9051) and IMAP4rev1 (RFC 3501) in front of the store service."""
