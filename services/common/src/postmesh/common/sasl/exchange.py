"""One SASL exchange, driven over any protocol's challenge/response framing.

The protocol supplies a transport (send a base64 challenge, return the client's line) and a
verifier (the auth service). SMTP AUTH (RFC 4954), IMAP AUTHENTICATE (RFC 9051 §6.2.2) and POP3
AUTH (RFC 5034) frame the exchange alike: base64 lines, "=" for an empty initial response, "*"
to cancel, success data sent as a last challenge answered with an empty line.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from postmesh.common.sasl.registry import ServerMechanism
from postmesh.common.sasl.scram import ScramParams, ScramSha256Mechanism, ScramVerdict
from postmesh.common.sasl.steps import (
    Challenge,
    CheckPassword,
    Failed,
    NeedScramParams,
    SaslCancelled,
    SaslError,
    Succeeded,
    VerifyScramProof,
)

# Sends a base64 challenge ("" for an empty one) and returns the client's answer line.
Transport = Callable[[str], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class AuthVerdict:
    """The auth service's answer: the canonical user, or None; ``retry_after`` > 0 when the
    account or client address is temporarily locked out after repeated failures."""

    user: str | None
    retry_after: int = 0


class Verifier(Protocol):
    async def check_password(self, authcid: str, password: str, mechanism: str) -> AuthVerdict: ...

    async def scram_params(self, username: str) -> ScramParams | AuthVerdict:
        """The user's salt and iterations, or an AuthVerdict when locked out."""
        ...

    async def verify_scram(
        self, username: str, auth_message: bytes, proof: bytes
    ) -> ScramVerdict | AuthVerdict: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    mechanism: str
    # The identity the client claimed ("" if it never got that far), for logs.
    authcid: str
    user: str | None
    reason: str = ""
    retry_after: int = 0


def decode_b64(line: str) -> bytes:
    try:
        return base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError) as e:
        raise SaslError("invalid base64 data") from e


def decode_initial(initial: str | None) -> bytes | None:
    """The initial response as sent on the command line; "=" stands for an empty one."""
    if initial is None:
        return None
    return b"" if initial == "=" else decode_b64(initial)


async def _challenge(transport: Transport, data: bytes) -> bytes:
    line = (await transport(base64.b64encode(data).decode())).strip()
    if line == "*":
        raise SaslCancelled("authentication cancelled")
    return decode_b64(line)


def _locked(mech: str, who: str, retry_after: int) -> Outcome:
    return Outcome(mech, who, None, "temporarily locked out", retry_after)


async def run_exchange(
    mech: ServerMechanism, initial: str | None, transport: Transport, verifier: Verifier
) -> Outcome:
    """Run the exchange to its end. Raises SaslError for malformed client data, SaslCancelled
    for "*", and whatever the verifier raises when the auth service is unreachable."""
    step = mech.start(decode_initial(initial))
    who = ""
    while True:
        match step:
            case Challenge(data):
                step = mech.respond(await _challenge(transport, data))
            case CheckPassword(authcid, password):
                verdict = await verifier.check_password(authcid, password, mech.name)
                if verdict.retry_after:
                    return _locked(mech.name, authcid, verdict.retry_after)
                if verdict.user is None:
                    return Outcome(mech.name, authcid, None, "invalid credentials")
                return Outcome(mech.name, authcid, verdict.user)
            case NeedScramParams(username):
                assert isinstance(mech, ScramSha256Mechanism)
                who = username
                params = await verifier.scram_params(username)
                if isinstance(params, AuthVerdict):
                    return _locked(mech.name, who, params.retry_after)
                step = mech.with_params(params)
            case VerifyScramProof(username, auth_message, proof):
                assert isinstance(mech, ScramSha256Mechanism)
                answer = await verifier.verify_scram(username, auth_message, proof)
                if isinstance(answer, AuthVerdict):
                    return _locked(mech.name, who, answer.retry_after)
                step = mech.with_verdict(answer)
            case Succeeded(user, final_data):
                # RFC 5034 §4 / RFC 4954 §4: additional data with success goes out as a
                # challenge; the client must answer it with an empty response.
                if final_data is not None and await _challenge(transport, final_data):
                    return Outcome(mech.name, who, None, "unexpected final response")
                return Outcome(mech.name, who or user, user)
            case Failed(reason):
                return Outcome(mech.name, who, None, reason)
