"""SASL mechanisms and the exchange driver; SCRAM against the RFC 7677 §3 example."""

from __future__ import annotations

import base64

import pytest

from postmesh.common.sasl import AuthVerdict, SaslCancelled, SaslError, create, offered
from postmesh.common.sasl.exchange import run_exchange
from postmesh.common.sasl.saslprep import SaslPrepError, saslprep
from postmesh.common.sasl.scram import (
    ScramKeys,
    ScramParams,
    ScramSha256Mechanism,
    ScramVerdict,
    decoy_params,
    derive_keys,
    verify_proof,
)
from postmesh.common.sasl.steps import (
    Challenge,
    CheckPassword,
    Failed,
    NeedScramParams,
    Succeeded,
    VerifyScramProof,
)

# RFC 7677 §3.
SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.fixture(scope="module")
def keys() -> ScramKeys:
    return derive_keys("pencil", SALT, 4096)


def test_scram_rfc7677_vector_step_by_step(keys: ScramKeys) -> None:
    mech = ScramSha256Mechanism(nonce_factory=lambda: SERVER_NONCE)
    step = mech.start(CLIENT_FIRST)
    assert step == NeedScramParams("user")
    step = mech.with_params(ScramParams(SALT, 4096))
    assert step == Challenge(SERVER_FIRST)
    step = mech.respond(CLIENT_FINAL)
    assert isinstance(step, VerifyScramProof)
    signature = verify_proof(keys, step.auth_message, step.proof)
    assert signature is not None
    step = mech.with_verdict(ScramVerdict("user@example.test", signature))
    assert step == Succeeded("user@example.test", SERVER_FINAL)


def test_scram_wrong_password_fails_verification() -> None:
    mech = ScramSha256Mechanism(nonce_factory=lambda: SERVER_NONCE)
    mech.start(CLIENT_FIRST)
    mech.with_params(ScramParams(SALT, 4096))
    step = mech.respond(CLIENT_FINAL)
    assert isinstance(step, VerifyScramProof)
    assert verify_proof(derive_keys("pen", SALT, 4096), step.auth_message, step.proof) is None
    assert verify_proof(derive_keys("pencil", SALT, 4096), step.auth_message, b"x") is None


@pytest.mark.parametrize(
    ("first", "reason"),
    [
        (b"p=tls-unique,,n=user,r=abc", "channel binding is not supported"),
        (b"n,a=other,n=user,r=abc", "authorization identity not permitted"),
        (b"n,,m=ext,n=user,r=abc", "SCRAM extensions are not supported"),
    ],
)
def test_scram_refuses_cleanly(first: bytes, reason: str) -> None:
    assert ScramSha256Mechanism().start(first) == Failed(reason)


@pytest.mark.parametrize(
    "first",
    [
        b"n,,",
        b"x,,n=user,r=abc",
        b"n,,r=abc,n=user",
        b"n,,n=us=41er,r=abc",
        b"n,,n=,r=abc",
        b"\xff",
    ],
)
def test_scram_malformed_client_first(first: bytes) -> None:
    with pytest.raises(SaslError):
        ScramSha256Mechanism().start(first)


def test_scram_accepts_y_flag_and_escaped_names() -> None:
    mech = ScramSha256Mechanism(nonce_factory=lambda: "s")
    assert mech.start(b"y,,n=a=2Cb=3Dc,r=abc") == NeedScramParams("a,b=c")
    mech.with_params(ScramParams(b"salt", 4096))
    # c= must carry this client's gs2 header ("y,,"), and the combined nonce.
    step = mech.respond(b"c=" + base64.b64encode(b"y,,") + b",r=abcs,p=" + base64.b64encode(b"x"))
    assert isinstance(step, VerifyScramProof)


@pytest.mark.parametrize(
    ("final", "reason"),
    [
        (b"c=eSws,r=rOprNGfwEbeRWgbNEkqO" + SERVER_NONCE.encode() + b",p=AAAA", "channel binding"),
        (b"c=biws,r=wrongnonce,p=AAAA", "nonce"),
    ],
)
def test_scram_client_final_mismatch(final: bytes, reason: str) -> None:
    mech = ScramSha256Mechanism(nonce_factory=lambda: SERVER_NONCE)
    mech.start(CLIENT_FIRST)
    mech.with_params(ScramParams(SALT, 4096))
    step = mech.respond(final)
    assert isinstance(step, Failed) and reason in step.reason


def test_scram_client_final_without_proof_is_malformed() -> None:
    mech = ScramSha256Mechanism(nonce_factory=lambda: SERVER_NONCE)
    mech.start(CLIENT_FIRST)
    mech.with_params(ScramParams(SALT, 4096))
    with pytest.raises(SaslError):
        mech.respond(b"c=biws,r=x")


def test_decoy_params_are_stable_per_user() -> None:
    assert decoy_params(b"k", "a@x.test") == decoy_params(b"k", "a@x.test")
    assert decoy_params(b"k", "a@x.test").salt != decoy_params(b"k", "b@x.test").salt


def test_saslprep() -> None:
    assert saslprep("I\u00adX") == "IX"  # RFC 4013 §3 examples
    assert saslprep("user") == "user"
    assert saslprep("\u00aa") == "a"
    assert saslprep("\u2168") == "IX"
    assert saslprep("a\u00a0b") == "a b"
    for bad in ("\u0007", "\u0627\u0031"):
        with pytest.raises(SaslPrepError):
            saslprep(bad)


def test_plain_and_login_steps() -> None:
    plain = create("plain")
    assert plain is not None
    assert plain.start(None) == Challenge(b"")
    assert plain.respond(b"\x00u\x00pw") == CheckPassword("u", "pw")
    assert create("PLAIN").start(b"admin\x00u\x00pw") == Failed(  # type: ignore[union-attr]
        "authorization identity not permitted"
    )
    login = create("LOGIN")
    assert login is not None
    assert login.start(None) == Challenge(b"Username:")
    assert login.respond(b"u") == Challenge(b"Password:")
    assert login.respond(b"pw") == CheckPassword("u", "pw")
    login = create("LOGIN")
    assert login is not None
    assert login.start(b"u") == Challenge(b"Password:")
    assert create("CRAM-MD5") is None


def test_offered_hides_plaintext_mechanisms_without_tls() -> None:
    assert offered(True) == ["SCRAM-SHA-256", "PLAIN", "LOGIN"]
    assert offered(False) == ["SCRAM-SHA-256"]
    assert offered(True, ("PLAIN",)) == ["PLAIN"]


class _Verifier:
    def __init__(self, keys: ScramKeys, locked: int = 0) -> None:
        self.keys = keys
        self.locked = locked

    async def check_password(self, authcid: str, password: str, mechanism: str) -> AuthVerdict:
        if self.locked:
            return AuthVerdict(None, self.locked)
        return AuthVerdict("user@example.test" if password == "pencil" else None)

    async def scram_params(self, username: str) -> ScramParams | AuthVerdict:
        if self.locked:
            return AuthVerdict(None, self.locked)
        return ScramParams(self.keys.salt, self.keys.iterations)

    async def verify_scram(
        self, username: str, auth_message: bytes, proof: bytes
    ) -> ScramVerdict | AuthVerdict:
        sig = verify_proof(self.keys, auth_message, proof)
        return ScramVerdict("user@example.test" if sig else None, sig or b"")


class _Script:
    """A client: answers each challenge from a list and records what it was sent."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.challenges: list[bytes] = []

    async def __call__(self, challenge: str) -> str:
        self.challenges.append(base64.b64decode(challenge))
        return self.answers.pop(0)


async def test_exchange_scram_rfc7677(keys: ScramKeys) -> None:
    client = _Script(b64(CLIENT_FINAL), "")
    mech = ScramSha256Mechanism(nonce_factory=lambda: SERVER_NONCE)
    outcome = await run_exchange(mech, b64(CLIENT_FIRST), client, _Verifier(keys))
    assert outcome.user == "user@example.test" and outcome.authcid == "user"
    assert client.challenges == [SERVER_FIRST, SERVER_FINAL]


async def test_exchange_scram_nonempty_final_answer_fails(keys: ScramKeys) -> None:
    client = _Script(b64(CLIENT_FINAL), b64(b"junk"))
    mech = ScramSha256Mechanism(nonce_factory=lambda: SERVER_NONCE)
    outcome = await run_exchange(mech, b64(CLIENT_FIRST), client, _Verifier(keys))
    assert outcome.user is None


async def test_exchange_plain_login_cancel_and_lockout(keys: ScramKeys) -> None:
    ok = await run_exchange(create("PLAIN"), None, _Script(b64(b"\0u\0pencil")), _Verifier(keys))  # type: ignore[arg-type]
    assert ok.user == "user@example.test"
    bad = await run_exchange(
        create("LOGIN"),  # type: ignore[arg-type]
        b64(b"u"),
        _Script(b64(b"wrong")),
        _Verifier(keys),
    )
    assert bad.user is None and bad.authcid == "u"
    with pytest.raises(SaslCancelled):
        await run_exchange(create("PLAIN"), None, _Script("*"), _Verifier(keys))  # type: ignore[arg-type]
    with pytest.raises(SaslError):
        await run_exchange(create("PLAIN"), "!!", _Script(), _Verifier(keys))  # type: ignore[arg-type]
    locked = await run_exchange(
        ScramSha256Mechanism(), b64(CLIENT_FIRST), _Script(), _Verifier(keys, locked=30)
    )
    assert locked.user is None and locked.retry_after == 30
    with pytest.raises(SaslError):  # "=" is an empty initial response: not a PLAIN message
        await run_exchange(create("PLAIN"), "=", _Script(), _Verifier(keys))  # type: ignore[arg-type]


def test_scram_client_reproduces_rfc7677() -> None:
    from postmesh.common.sasl.client import ScramClient

    client = ScramClient("user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    assert client.first() == CLIENT_FIRST
    assert client.final(SERVER_FIRST) == CLIENT_FINAL
    assert client.verify(SERVER_FINAL)
