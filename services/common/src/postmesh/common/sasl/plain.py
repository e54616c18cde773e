"""PLAIN (RFC 4616): one message ``[authzid] NUL authcid NUL passwd``."""

from __future__ import annotations

from postmesh.common.sasl.steps import Challenge, CheckPassword, Failed, SaslError, Step


def parse_plain(raw: bytes) -> tuple[str, str, str]:
    """RFC 4616 §2 message -> (authzid, authcid, password); raises SaslError."""
    parts = raw.split(b"\x00")
    if len(parts) != 3:
        raise SaslError("PLAIN response must have exactly three NUL-separated fields")
    try:
        authzid, authcid, password = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError as e:
        raise SaslError("PLAIN response is not UTF-8") from e
    if not authcid or not password:
        raise SaslError("empty user name or password")
    return authzid, authcid, password


# The reason of a PLAIN login asking to act as someone else (RFC 4616 §2 authzid).
AUTHZID_REFUSED = "authorization identity not permitted"


class PlainMechanism:
    name = "PLAIN"
    plaintext = True  # the password crosses the wire: offer only under TLS or on loopback

    def start(self, initial: bytes | None) -> Step:
        # RFC 4616 §2: no initial response means an empty challenge.
        return Challenge(b"") if initial is None else self.respond(initial)

    def respond(self, data: bytes) -> Step:
        authzid, authcid, password = parse_plain(data)
        if authzid and authzid != authcid:
            # Acting as another user (RFC 4616 §2 authzid) needs a master-user concept we lack.
            return Failed(AUTHZID_REFUSED)
        return CheckPassword(authcid, password)
