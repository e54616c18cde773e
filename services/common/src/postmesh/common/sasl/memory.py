"""Accounts in memory behind the SASL verifier interface (passwords, lockout answers and
SCRAM-SHA-256): what the protocol edges' unit tests use in place of the auth service, which the
integration tests run for real."""

from __future__ import annotations

from postmesh.common.sasl.exchange import AuthVerdict
from postmesh.common.sasl.scram import (
    ScramKeys,
    ScramParams,
    ScramVerdict,
    decoy_params,
    derive_keys,
    verify_proof,
)


class MemoryAccounts:
    """:class:`postmesh.common.backend.SaslAuthClientLike` over ``passwords`` (canonical,
    lower-case user -> password). ``locked_for`` > 0 answers every login "locked out, retry
    after this many seconds"; ``calls`` records (username, remote_ip, mechanism) of password
    checks."""

    def __init__(self, passwords: dict[str, str]) -> None:
        self.passwords = passwords
        self.locked_for = 0
        self.calls: list[tuple[str, str, str]] = []
        self._scram: dict[str, ScramKeys] = {}

    async def check_password(
        self, username: str, password: str, *, remote_ip: str, mechanism: str
    ) -> AuthVerdict:
        self.calls.append((username, remote_ip, mechanism))
        if self.locked_for:
            return AuthVerdict(None, self.locked_for)
        canonical = username.lower()
        return AuthVerdict(canonical if self.passwords.get(canonical) == password else None)

    async def scram_params(self, username: str, *, remote_ip: str) -> ScramParams | AuthVerdict:
        if self.locked_for:
            return AuthVerdict(None, self.locked_for)
        keys = self._keys(username.lower())
        if keys is None:
            return decoy_params(b"memory", username)  # as auth: no hint the user is unknown
        return ScramParams(keys.salt, keys.iterations)

    async def verify_scram(
        self, username: str, auth_message: bytes, proof: bytes, *, remote_ip: str
    ) -> ScramVerdict | AuthVerdict:
        keys = self._keys(username.lower())
        signature = verify_proof(keys, auth_message, proof) if keys else None
        return ScramVerdict(username.lower() if signature else None, signature or b"")

    def _keys(self, user: str) -> ScramKeys | None:
        password = self.passwords.get(user)
        if password is None:
            return None
        if user not in self._scram:
            self._scram[user] = derive_keys(password, b"fixed-salt-16byt", 4096)
        return self._scram[user]
