"""SCRAM-SHA-256 (RFC 5802, RFC 7677), server side, without channel binding.

The server never sees the password. The auth service keeps, per user, the salt, the iteration
count, StoredKey and ServerKey (RFC 5802 §3), made when the password is set, because none of
them can be derived from an argon2 hash (docs/adr/0019-scram-credentials.md). The edge runs
this state machine; the proof is checked where the keys live (:func:`verify_proof`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from postmesh.common.sasl.saslprep import SaslPrepError, saslprep
from postmesh.common.sasl.steps import (
    Challenge,
    Failed,
    NeedScramParams,
    SaslError,
    Step,
    Succeeded,
    VerifyScramProof,
)

NAME = "SCRAM-SHA-256"
# RFC 7677 §4: at least 4096 iterations.
MIN_ITERATIONS = 4096
DIGEST = "sha256"


@dataclass(frozen=True, slots=True)
class ScramKeys:
    """What is stored for a user (RFC 5802 §3), never the password or SaltedPassword."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


@dataclass(frozen=True, slots=True)
class ScramParams:
    """What the server reveals in server-first-message."""

    salt: bytes
    iterations: int


@dataclass(frozen=True, slots=True)
class ScramVerdict:
    """The auth service's answer to a proof: the user and ServerSignature, or user None."""

    user: str | None
    server_signature: bytes = b""


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, DIGEST).digest()


def derive_keys(password: str, salt: bytes, iterations: int) -> ScramKeys:
    """RFC 5802 §3; raises SaslPrepError for a password SASLprep rejects."""
    salted = hashlib.pbkdf2_hmac(DIGEST, saslprep(password).encode(), salt, iterations)
    client_key = _hmac(salted, b"Client Key")
    return ScramKeys(
        salt=salt,
        iterations=iterations,
        stored_key=hashlib.sha256(client_key).digest(),
        server_key=_hmac(salted, b"Server Key"),
    )


def new_keys(password: str, iterations: int = MIN_ITERATIONS) -> ScramKeys:
    return derive_keys(password, secrets.token_bytes(16), max(iterations, MIN_ITERATIONS))


def verify_proof(keys: ScramKeys, auth_message: bytes, proof: bytes) -> bytes | None:
    """ServerSignature when ``proof`` is right, else None (RFC 5802 §3, constant time)."""
    if len(proof) != len(keys.stored_key):
        return None
    signature = _hmac(keys.stored_key, auth_message)
    client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
    if not hmac.compare_digest(hashlib.sha256(client_key).digest(), keys.stored_key):
        return None
    return _hmac(keys.server_key, auth_message)


def decoy_params(secret: bytes, username: str, iterations: int = MIN_ITERATIONS) -> ScramParams:
    """Salt for a user without SCRAM keys: stable per name, so replies do not reveal which
    users exist (RFC 5802 §9 "mock" SCRAM exchange)."""
    return ScramParams(_hmac(secret, username.encode())[:16], iterations)


def _saslname(value: str) -> str:
    """RFC 5802 §5.1 saslname: "=2C" is ",", "=3D" is "=", any other "=" is an error."""
    out, i = [], 0
    while i < len(value):
        if value[i] == "=":
            code = value[i + 1 : i + 3]
            if code not in ("2C", "3D"):
                raise SaslError("invalid escape in SCRAM user name")
            out.append("," if code == "2C" else "=")
            i += 3
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _attributes(message: str) -> list[tuple[str, str]]:
    attrs = []
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=" or not part[0].isalpha():
            raise SaslError("malformed SCRAM attribute")
        attrs.append((part[0], part[2:]))
    return attrs


def _valid_nonce(nonce: str) -> bool:
    # RFC 5802 §7: printable ASCII except ",".
    return bool(nonce) and all("!" <= c <= "~" and c != "," for c in nonce)


def _server_nonce() -> str:
    return secrets.token_urlsafe(18)


class ScramSha256Mechanism:
    name = NAME
    plaintext = False  # the password never crosses the wire

    def __init__(self, nonce_factory: Callable[[], str] = _server_nonce) -> None:
        self._nonce_factory = nonce_factory
        self._stage = "client-first"
        self._gs2_header = ""
        self._username = ""
        self._first_bare = ""
        self._server_first = ""
        self._nonce = ""

    def start(self, initial: bytes | None) -> Step:
        # RFC 5802 §5: the client speaks first; without an initial response, an empty challenge.
        return Challenge(b"") if initial is None else self.respond(initial)

    def respond(self, data: bytes) -> Step:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SaslError("SCRAM message is not UTF-8") from e
        if self._stage == "client-first":
            return self._client_first(text)
        if self._stage == "client-final":
            return self._client_final(text)
        raise SaslError("unexpected SCRAM message")

    def _client_first(self, text: str) -> Step:
        # gs2-header = gs2-cbind-flag "," [authzid] "," (RFC 5802 §7)
        flag, sep1, rest = text.partition(",")
        authzid, sep2, bare = rest.partition(",")
        if not (sep1 and sep2):
            raise SaslError("malformed SCRAM client-first-message")
        if flag.startswith("p="):
            # We advertise no -PLUS variant, so a client demanding channel binding must stop.
            return Failed("channel binding is not supported")
        if flag not in ("n", "y"):
            raise SaslError("invalid SCRAM channel-binding flag")
        if authzid and not authzid.startswith("a="):
            raise SaslError("invalid SCRAM authzid")
        attrs = _attributes(bare)
        if attrs[0][0] == "m":
            return Failed("SCRAM extensions are not supported")  # RFC 5802 §5.1 "m"
        if len(attrs) < 2 or attrs[0][0] != "n" or attrs[1][0] != "r":
            raise SaslError("SCRAM client-first-message needs n= and r=")
        username = _saslname(attrs[0][1])
        try:
            username = saslprep(username)
        except SaslPrepError as e:
            raise SaslError(f"invalid SCRAM user name: {e}") from e
        if not username or not _valid_nonce(attrs[1][1]):
            raise SaslError("invalid SCRAM user name or nonce")
        if authzid and _saslname(authzid[2:]) != username:
            return Failed("authorization identity not permitted")
        self._gs2_header = text[: len(flag) + len(authzid) + 2]
        self._username = username
        self._first_bare = bare
        self._nonce = attrs[1][1] + self._nonce_factory()
        self._stage = "params"
        return NeedScramParams(username)

    def with_params(self, params: ScramParams) -> Step:
        """Continue after :class:`NeedScramParams` with the user's (or decoy) salt."""
        if self._stage != "params":
            raise RuntimeError("SCRAM parameters given out of order")
        salt = base64.b64encode(params.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={params.iterations}"
        self._stage = "client-final"
        return Challenge(self._server_first.encode())

    def _client_final(self, text: str) -> Step:
        without_proof, sep, proof_attr = text.rpartition(",")
        if not sep or not proof_attr.startswith("p="):
            raise SaslError("SCRAM client-final-message needs a proof")
        attrs = _attributes(without_proof)
        if len(attrs) < 2 or attrs[0][0] != "c" or attrs[1][0] != "r":
            raise SaslError("SCRAM client-final-message needs c= and r=")
        try:
            binding = base64.b64decode(attrs[0][1], validate=True)
            proof = base64.b64decode(proof_attr[2:], validate=True)
        except (binascii.Error, ValueError) as e:
            raise SaslError("invalid base64 in SCRAM client-final-message") from e
        self._stage = "verdict"
        # RFC 5802 §7: without channel binding, c= carries exactly the gs2-header.
        if binding != self._gs2_header.encode():
            return Failed("channel binding data does not match")
        if attrs[1][1] != self._nonce:
            return Failed("SCRAM nonce does not match")
        auth_message = f"{self._first_bare},{self._server_first},{without_proof}".encode()
        return VerifyScramProof(self._username, auth_message, proof)

    def with_verdict(self, verdict: ScramVerdict) -> Step:
        """Continue after :class:`VerifyScramProof` with the auth service's answer."""
        if self._stage != "verdict":
            raise RuntimeError("SCRAM verdict given out of order")
        self._stage = "done"
        if verdict.user is None:
            return Failed("invalid credentials")
        final = b"v=" + base64.b64encode(verdict.server_signature)
        return Succeeded(verdict.user, final)
