"""The rspamd content scan: its answer parsed, the decision, the header rewriting, and the edge
over the wire against a stand-in rspamd (aiohttp on 127.0.0.1:0 answering canned JSON); the real
rspamd from Debian is in tests/integration/test_smtp_content_scan.py."""

from __future__ import annotations

import asyncio
import json
import smtplib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from postmesh.smtp_edge.content_scan import (
    Action,
    ScanFailed,
    ScanRequest,
    ScanResult,
    apply,
    encode_subject,
    parse_result,
    remove_fields,
    replace_subject,
    request_headers,
)

if TYPE_CHECKING:
    from conftest import EdgeFactory

MESSAGE = (
    b"From: Carol <carol@remote.example>\r\nTo: alice@example.org\r\nSubject: hello\r\n"
    b"X-Spam: No\r\nX-Spam-Status: No,\r\n\tscore=-100\r\n\r\nBody.\r\n"
)


def test_parse_result() -> None:
    r = parse_result(
        {
            "action": "add header", "score": 6.5, "required_score": 15,
            "symbols": {"GTUBE": {}, "ARC_NA": {}}, "messages": {"smtp_message": "go away"},
        }
    )  # fmt: skip
    assert r == ScanResult(Action.ADD_HEADER, 6.5, 15.0, "", "go away", ["ARC_NA", "GTUBE"])
    for bad in ([], {"action": "explode"}, {"action": "reject", "score": "high"}):
        with pytest.raises(ScanFailed):
            parse_result(bad)


def test_request_headers_carry_the_envelope() -> None:
    req = ScanRequest(
        "Q1", "192.0.2.7", "mail.example", "mail.example", "a@example", ["b@x", "c@x"], ""
    )
    assert request_headers(req) == [
        ("Queue-Id", "Q1"), ("IP", "192.0.2.7"), ("Helo", "mail.example"),
        ("From", "a@example"), ("Rcpt", "b@x"), ("Rcpt", "c@x"), ("Hostname", "mail.example"),
    ]  # fmt: skip
    null_sender = ScanRequest("Q2", "192.0.2.7", "h\r\nX: y", "", "", ["b@x"], "u@x")
    assert request_headers(null_sender) == [
        ("Queue-Id", "Q2"), ("IP", "192.0.2.7"), ("Helo", "h X: y"), ("From", ""),
        ("Rcpt", "b@x"), ("User", "u@x"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("action", "reply"),
    [
        (Action.REJECT, "550 5.7.1 Spam here"),
        (Action.SOFT_REJECT, "451 4.7.1 Spam here"),
        (Action.GREYLIST, "451 4.7.1 Greylisted, please try again later"),
    ],
)
def test_refusing_actions(action: Action, reply: str) -> None:
    assert apply(ScanResult(action, 20, 15, message="Spam\r\nhere"), MESSAGE).reply == reply


def test_add_header_replaces_the_senders_spam_fields() -> None:
    out = apply(ScanResult(Action.ADD_HEADER, 7, 15, symbols=["A", "B"]), MESSAGE)
    assert out.spam and not out.reply
    assert out.content.startswith(
        b"X-Spam-Status: Yes, score=7.00 required=15.00\r\n\ttests=A,B\r\nX-Spam: Yes\r\n"
    )
    assert b"X-Spam: No" not in out.content and b"score=-100" not in out.content
    assert out.content.endswith(b"Subject: hello\r\n\r\nBody.\r\n")


def test_no_action_is_marked_not_spam() -> None:
    out = apply(ScanResult(Action.NO_ACTION, 1.5, 15), MESSAGE)
    assert not out.spam
    assert out.content.startswith(b"X-Spam-Status: No, score=1.50 required=15.00\r\nFrom: ")


def test_rewrite_subject() -> None:
    out = apply(ScanResult(Action.REWRITE_SUBJECT, 9, 15, subject="*** SPAM *** hello"), MESSAGE)
    assert out.spam
    assert out.content.count(b"Subject:") == 1
    assert b"Subject: *** SPAM *** hello\r\n" in out.content


def test_subject_encoding() -> None:
    assert encode_subject("plain\r\nnext") == b"plain next"
    encoded = encode_subject("[SPAM] caf\u00e9 " + "\u00e9" * 40)
    words = encoded.split(b"\r\n ")
    assert len(words) > 1 and all(len(w) <= 75 for w in words)
    from email.header import decode_header, make_header

    assert str(make_header(decode_header(encoded.decode()))) == "[SPAM] caf\u00e9 " + "\u00e9" * 40


def test_field_removal_keeps_the_body_and_other_folds() -> None:
    msg = b"A: 1\r\n\tmore\r\nSubject: s\r\n\tfold\r\nB: 2\r\n\r\nSubject: in body\r\n"
    assert (
        remove_fields(msg, (b"subject",)) == b"A: 1\r\n\tmore\r\nB: 2\r\n\r\nSubject: in body\r\n"
    )
    assert replace_subject(msg, "t").startswith(b"Subject: t\r\nA: 1\r\n")


# -- the edge, over the wire --------------------------------------------------------------------

Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def rspamd() -> AsyncIterator[Callable[[Answer], Awaitable[str]]]:
    """A stand-in rspamd; records what it was sent."""
    runners: list[web.AppRunner] = []

    async def start(answer: Answer) -> str:
        app = web.Application()
        app.router.add_post("/checkv2", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def canned(body: dict[str, Any], seen: list[tuple[dict[str, list[str]], bytes]]) -> Answer:
    async def answer(request: web.Request) -> web.StreamResponse:
        headers: dict[str, list[str]] = {}
        for k, v in request.headers.items():
            headers.setdefault(k, []).append(v)
        seen.append((headers, await request.read()))
        return web.Response(text=json.dumps(body), content_type="application/json")

    return answer


def send(port: int, message: bytes = MESSAGE) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=10) as s:
        s.ehlo()
        s.mail("carol@remote.example")
        s.rcpt("alice@example.org")
        s.rcpt("bob@example.org")
        try:
            return s.data(message)
        except smtplib.SMTPDataError as e:
            return e.smtp_code, e.smtp_error


async def test_reject_over_the_wire(make_edge: EdgeFactory, rspamd: Any) -> None:
    seen: list[tuple[dict[str, list[str]], bytes]] = []
    url = await rspamd(canned({"action": "reject", "score": 20, "required_score": 15}, seen))
    edge = await make_edge(smtp_rspamd_url=url)
    assert await asyncio.to_thread(send, edge.mx) == (550, b"5.7.1 Message rejected as spam")
    headers, body = seen[0]
    assert body == MESSAGE
    assert headers["Rcpt"] == ["alice@example.org", "bob@example.org"]
    assert headers["From"] == ["carol@remote.example"] and headers["Helo"] == ["client.test"]
    assert headers["IP"] == ["127.0.0.1"] and headers["Queue-Id"][0]
    assert await edge.messages(0) == []


async def test_spam_is_accepted_marked_and_filed(make_edge: EdgeFactory, rspamd: Any) -> None:
    seen: list[tuple[dict[str, list[str]], bytes]] = []
    url = await rspamd(canned({"action": "add header", "score": 8, "required_score": 15}, seen))
    edge = await make_edge(smtp_rspamd_url=url)
    code, _ = await asyncio.to_thread(send, edge.mx)
    assert code == 250
    [msg] = await edge.messages(1)
    assert msg.mailbox == "Junk"
    assert b"\r\nX-Spam: Yes\r\n" in msg.inline_content
    assert b"X-Spam: No" not in msg.inline_content


async def test_submission_is_not_scanned_by_default(make_edge: EdgeFactory, rspamd: Any) -> None:
    seen: list[tuple[dict[str, list[str]], bytes]] = []
    url = await rspamd(canned({"action": "reject"}, seen))
    edge = await make_edge(smtp_rspamd_url=url)

    def submit() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", edge.submission, timeout=10) as s:
            s.login("alice@example.org", "wonderland")
            msg = MESSAGE.replace(b"Carol <carol@remote.example>", b"alice@example.org")
            s.mail("alice@example.org")
            s.rcpt("bob@example.org")
            return s.data(msg)

    assert (await asyncio.to_thread(submit))[0] == 250
    assert seen == []


@pytest.mark.parametrize(("fail_open", "code"), [(True, 250), (False, 451)])
async def test_rspamd_down_or_broken(
    make_edge: EdgeFactory, rspamd: Any, fail_open: bool, code: int
) -> None:
    async def broken(request: web.Request) -> web.StreamResponse:
        return web.Response(status=500, text="oops")

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.Response(text="{}")

    for answer in (broken, slow):
        url = await rspamd(answer)
        edge = await make_edge(
            smtp_rspamd_url=url, smtp_rspamd_timeout_seconds=0.5, smtp_rspamd_fail_open=fail_open
        )
        got, text = await asyncio.to_thread(send, edge.mx)
        assert got == code, text
    if fail_open:
        msgs = await edge.messages(1)
        # Accepted unscanned: as sent, after our Received: field.
        assert msgs[0].inline_content.endswith(b"\r\n" + MESSAGE)
        assert b"required=" not in msgs[0].inline_content
