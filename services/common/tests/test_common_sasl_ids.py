from __future__ import annotations

import base64

import pytest

from postmesh.common.ids import new_queue_id
from postmesh.common.net import plaintext_auth_allowed
from postmesh.common.sasl import SaslError, decode_login_field, decode_plain


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_plain_decodes_three_fields() -> None:
    assert decode_plain(b64(b"\x00user@example.test\x00pw")) == ("", "user@example.test", "pw")
    assert decode_plain(b64(b"admin\x00user\x00pw")) == ("admin", "user", "pw")


@pytest.mark.parametrize(
    "bad",
    [
        "!!!",
        b64(b"only-two\x00fields"),
        b64(b"\x00\x00pw"),
        b64(b"\x00user\x00"),
        b64(b"\x00\xff\x00p"),
    ],
)
def test_plain_rejects_malformed(bad: str) -> None:
    with pytest.raises(SaslError):
        decode_plain(bad)


def test_login_field() -> None:
    assert decode_login_field(b64("jörg".encode())) == "jörg"
    with pytest.raises(SaslError):
        decode_login_field("")


def test_queue_ids_unique_and_time_sortable() -> None:
    ids = [new_queue_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(len(i) == 20 and i.isalnum() for i in ids)
    assert ids[0][:10] <= ids[-1][:10]


def test_plaintext_auth_policy() -> None:
    assert plaintext_auth_allowed("127.0.0.1", tls_active=False)
    assert plaintext_auth_allowed("::1", tls_active=False)
    assert not plaintext_auth_allowed("192.0.2.7", tls_active=False)
    assert plaintext_auth_allowed("192.0.2.7", tls_active=True)
    assert not plaintext_auth_allowed(None, tls_active=False)
