"""The postmesh CLI against a recording HTTP server on loopback (the integration test drives it
against the real services): requests it makes, what it prints, its exit statuses."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from postmesh.cli import units
from postmesh.cli.main import main


@dataclass
class Fake:
    """Answers (status, JSON) per "METHOD /path?query"; records every request."""

    answers: dict[str, tuple[int, Any]] = field(default_factory=dict)
    seen: list[tuple[str, str, str, Any]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def fake() -> Iterator[Fake]:
    state = Fake()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            key = f"{self.command} {self.path}"
            state.seen.append((self.command, self.path, self.headers["Authorization"], body))
            status, data = state.answers.get(key, (404, {"detail": f"no fake for {key}"}))
            raw = b"" if data is None else json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def run(
    fake: Fake, capsys: pytest.CaptureFixture[str], *argv: str, token: str | None = "tok"
) -> tuple[int, str, str]:
    args = ["--url", fake.url, "--queue-url", fake.url]
    if token is not None:
        args += ["--token", token]
    try:
        code = main([*args, *argv])
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_list_as_table_and_json_either_side_of_the_command(
    fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    users = [{"address": "ann@example.test"}, {"address": "jörg@xn--bcher-kva.example"}]
    fake.answers["GET /api/v1/users?domain=example.test"] = (200, users)
    code, out, _ = run(fake, capsys, "users", "list", "--domain", "example.test")
    assert code == 0
    assert out.splitlines() == ["ADDRESS", "ann@example.test", "jörg@xn--bcher-kva.example"]
    for argv in (("--json", "users", "list", "--domain", "example.test"),
                 ("users", "list", "--domain", "example.test", "--json")):  # fmt: skip
        code, out, _ = run(fake, capsys, *argv)
        assert code == 0 and json.loads(out) == users
    assert {s[2] for s in fake.seen} == {"Bearer tok"}


def test_create_user_password_from_stdin_and_encoded_paths(
    fake: Fake, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.answers["POST /api/v1/users"] = (201, {"address": "ann@example.test"})
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret pass\nignored\n"))
    code, out, _ = run(fake, capsys, "users", "create", "Ann@example.test", "--password-stdin")
    assert code == 0 and out == "address  ann@example.test\n"
    assert fake.seen[-1][3] == {"address": "Ann@example.test", "password": "s3cret pass"}
    fake.answers["POST /api/v1/users/j%C3%B6rg@example.test/disable"] = (
        200, {"address": "jörg@example.test", "disabled": True},
    )  # fmt: skip
    code, out, _ = run(fake, capsys, "users", "disable", "jörg@example.test")
    assert code == 0 and "disabled  yes" in out


def test_no_password_without_a_terminal_is_a_usage_error(
    fake: Fake, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run(fake, capsys, "users", "create", "ann@example.test")
    assert code == 2 and "--password-stdin" in err
    assert fake.seen == []


def test_quota_set_keeps_the_limit_not_given(
    fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    q = {"storage_used_bytes": 1536, "storage_limit_bytes": 2 * 1024**3, "messages_used": 3, "message_limit": 0}  # fmt: skip
    fake.answers["GET /api/v1/users/ann@example.test/quota"] = (200, q)
    fake.answers["PUT /api/v1/users/ann@example.test/quota"] = (200, {**q, "message_limit": 500})
    code, out, _ = run(fake, capsys, "quota", "set", "ann@example.test", "--messages", "500")
    assert code == 0
    assert fake.seen[-1][3] == {"storage_limit_bytes": 2 * 1024**3, "message_limit": 500}
    assert out.splitlines() == [
        "RESOURCE  USED     LIMIT",
        "storage   1.5 KiB  2.0 GiB",
        "messages  3        500",
    ]
    code, _, err = run(fake, capsys, "quota", "set", "ann@example.test")
    assert code == 2 and "--storage" in err


def test_api_refusals_exit_1_with_the_reason(
    fake: Fake, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.answers["POST /api/v1/domains"] = (
        403, {"detail": "creating domains needs the admin role; this is a domain-admin token"},
    )  # fmt: skip
    code, out, err = run(fake, capsys, "domains", "create", "new.test")
    assert code == 1 and out == ""
    assert err == (
        "postmesh: error: 403 Forbidden: creating domains needs the admin role;"
        " this is a domain-admin token\n"
    )
    fake.answers["POST /api/v1/aliases"] = (
        422, {"detail": [{"type": "string_type", "loc": ["body", "targets", 0], "msg": "Input should be a valid string"}]},
    )  # fmt: skip
    code, _, err = run(fake, capsys, "--json", "aliases", "create", "a@example.test", "b@x.test")
    assert code == 1
    first, second = err.splitlines()
    assert json.loads(first)["error"]["status"] == 422
    assert second.endswith("targets.0: Input should be a valid string")


def test_where_the_token_comes_from(
    fake: Fake, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake.answers["GET /api/v1/whoami"] = (200, {"role": "admin", "domains": [], "token_id": None})
    monkeypatch.chdir(tmp_path)  # no .postmesh/admin-token here
    monkeypatch.delenv("POSTMESH_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("POSTMESH_ADMIN_TOKEN_FILE", raising=False)
    code, _, err = run(fake, capsys, "whoami", token=None)
    assert code == 2 and "no token" in err
    (tmp_path / "t").write_text("from-file\n")
    monkeypatch.setenv("POSTMESH_ADMIN_TOKEN_FILE", str(tmp_path / "t"))
    assert run(fake, capsys, "whoami", token=None)[0] == 0
    monkeypatch.setenv("POSTMESH_ADMIN_TOKEN", "from-env")
    assert run(fake, capsys, "whoami", token=None)[0] == 0
    code, out, _ = run(fake, capsys, "whoami", "--token", "from-flag", token=None)
    assert code == 0 and "domains   all" in out
    (tmp_path / ".postmesh").mkdir()
    (tmp_path / ".postmesh" / "admin-token").write_text("dev\n")
    monkeypatch.delenv("POSTMESH_ADMIN_TOKEN")
    monkeypatch.delenv("POSTMESH_ADMIN_TOKEN_FILE")
    assert run(fake, capsys, "whoami", token=None)[0] == 0
    assert [s[2] for s in fake.seen] == [
        "Bearer from-file", "Bearer from-env", "Bearer from-flag", "Bearer dev",
    ]  # fmt: skip


def test_queue_list_follows_pages(fake: Fake, capsys: pytest.CaptureFixture[str]) -> None:
    def entry(n: int) -> dict[str, Any]:
        return {"queue_id": f"Q{n}", "recipient": f"r{n}@far.test", "sender": "s@example.test",
                "attempts": n, "next_attempt_at": None, "last_error": "451 try later"}  # fmt: skip

    fake.answers["GET /api/v1/queue?page_size=1000"] = (
        200, {"entries": [entry(1)], "next_page_token": "p2"},
    )  # fmt: skip
    fake.answers["GET /api/v1/queue?page_token=p2&page_size=1000"] = (
        200, {"entries": [entry(2)], "next_page_token": ""},
    )  # fmt: skip
    code, out, _ = run(fake, capsys, "queue", "list", "--json")
    assert code == 0 and [e["queue_id"] for e in json.loads(out)] == ["Q1", "Q2"]
    code, out, _ = run(fake, capsys, "queue", "list")
    lines = out.splitlines()
    assert lines[0].split() == ["QUEUE", "ID", "RECIPIENT", "SENDER", "ATTEMPTS", "NEXT", "ATTEMPT", "LAST", "ERROR"]  # fmt: skip
    assert lines[2].split()[:4] == ["Q2", "r2@far.test", "s@example.test", "2"]
    fake.answers["DELETE /api/v1/queue/Q1?bounce=true"] = (
        200, {"action": "bounced", "entries": [entry(1)]},
    )  # fmt: skip
    code, out, _ = run(fake, capsys, "queue", "delete", "Q1", "--bounce")
    assert code == 0 and out.startswith("bounced: 1 entry\n")


def test_unreachable_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--url", "http://127.0.0.1:9", "--token", "t", "domains", "list"])
    assert code == 3
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    commands = [
        [], ["whoami"], ["tokens", "create"], ["tokens", "list"], ["tokens", "revoke"],
        ["domains", "list"], ["domains", "create"], ["users", "list"], ["users", "create"],
        ["users", "password"], ["quota", "set"], ["aliases", "create"], ["catch-all", "set"],
        ["dkim", "list"], ["dkim", "rotate"], ["dkim", "dns-records"], ["queue", "list"],
        ["queue", "show"], ["queue", "retry"], ["queue", "delete"], ["queue", "trace"],
    ]  # fmt: skip
    for argv in commands:
        with pytest.raises(SystemExit) as e:
            main([*argv, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: postmesh"), argv
        assert "--json" in out


def test_sizes_and_durations() -> None:
    assert [units.size(s) for s in ("0", "10", "1k", "512M", "2GiB", "1TB")] == [
        0, 10, 1024, 512 * 1024**2, 2 * 1024**3, 1024**4,
    ]  # fmt: skip
    assert [units.duration(s) for s in ("90", "15m", "12h", "30d", "1w")] == [
        90, 900, 43200, 2592000, 604800,
    ]  # fmt: skip
    for bad in ("", "-1", "1X", "1.5G"):
        with pytest.raises(Exception, match="not a size"):
            units.size(bad)
