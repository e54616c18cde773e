"""An in-memory :class:`~postmesh.common.mailauth.dnsclient.Resolver` for unit tests: zone data
as ``{(name, type): [values]}``; a name listed under ``temperror`` fails as a timeout would.
Lives in the package so every service's tests use the same one."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from postmesh.common.mailauth.dnsclient import Answer, DnsTempError


@dataclass
class FakeResolver:
    records: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    temperror: set[str] = field(default_factory=set)
    queries: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, rdtype: str, values: Iterable[str]) -> None:
        self.records.setdefault((name.lower().rstrip("."), rdtype.upper()), []).extend(values)

    async def query(self, name: str, rdtype: str) -> Answer:
        key = (name.lower().rstrip("."), rdtype.upper())
        self.queries.append(key)
        if key[0] in self.temperror:
            raise DnsTempError(f"{rdtype} {name}: Timeout")
        if key in self.records:
            return Answer(list(self.records[key]))
        exists = any(n == key[0] or n.endswith("." + key[0]) for n, _ in self.records)
        return Answer([], nxdomain=not exists)


def rsa_test_key(bits: int = 2048) -> tuple[bytes, str]:
    """A fresh RSA key for signing tests: (PKCS#1 PEM private key for dkimpy, the base64
    SubjectPublicKeyInfo for the ``p=`` of its DKIM key record)."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, base64.b64encode(pub).decode()
