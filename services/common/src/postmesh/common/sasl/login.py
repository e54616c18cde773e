"""LOGIN (draft-murchison-sasl-login): "Username:", then "Password:", each answered in base64.

Obsolete but still what Outlook and many devices send; an initial response is the user name.
"""

from __future__ import annotations

from postmesh.common.sasl.steps import Challenge, CheckPassword, SaslError, Step

USERNAME_PROMPT = b"Username:"
PASSWORD_PROMPT = b"Password:"


def _text(data: bytes) -> str:
    try:
        value = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SaslError("LOGIN response is not UTF-8") from e
    if not value:
        raise SaslError("empty LOGIN response")
    return value


class LoginMechanism:
    name = "LOGIN"
    plaintext = True

    def __init__(self) -> None:
        self._username: str | None = None

    def start(self, initial: bytes | None) -> Step:
        if initial is None:
            return Challenge(USERNAME_PROMPT)
        return self.respond(initial)

    def respond(self, data: bytes) -> Step:
        if self._username is None:
            self._username = _text(data)
            return Challenge(PASSWORD_PROMPT)
        return CheckPassword(self._username, _text(data))
