from __future__ import annotations

import base64

import pytest

from postmesh.common.ids import new_queue_id
from postmesh.common.net import plaintext_auth_allowed
from postmesh.common.sasl import SaslError, decode_b64
from postmesh.common.sasl.login import PASSWORD_PROMPT, USERNAME_PROMPT, LoginMechanism
from postmesh.common.sasl.plain import parse_plain
from postmesh.common.sasl.steps import Challenge, CheckPassword


def test_plain_decodes_three_fields() -> None:
    assert parse_plain(b"\x00user@example.test\x00pw") == ("", "user@example.test", "pw")
    assert parse_plain(b"admin\x00user\x00pw") == ("admin", "user", "pw")


@pytest.mark.parametrize(
    "bad",
    [b"only-two\x00fields", b"\x00\x00pw", b"\x00user\x00", b"\x00\xff\x00p"],
)
def test_plain_rejects_malformed(bad: bytes) -> None:
    with pytest.raises(SaslError):
        parse_plain(bad)


def test_base64_is_checked_strictly() -> None:
    assert decode_b64(base64.b64encode(b"x").decode()) == b"x"
    with pytest.raises(SaslError):
        decode_b64("!!!")


def test_login_asks_user_then_password() -> None:
    mech = LoginMechanism()
    assert mech.start(None) == Challenge(USERNAME_PROMPT)
    assert mech.respond("jörg".encode()) == Challenge(PASSWORD_PROMPT)
    assert mech.respond(b"pw") == CheckPassword("jörg", "pw")
    with pytest.raises(SaslError):
        LoginMechanism().respond(b"")


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
