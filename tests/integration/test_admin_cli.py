"""The `postmesh` CLI as an operator runs it: the installed console script as a subprocess,
against the real auth and delivery admin APIs of a running system (embedded, and Kafka +
FerretDB). Accounts made with it work over SMTP and IMAP; a domain-admin token issued with it
manages its domain and is refused (403, with the reason) on another domain, on domain creation,
on tokens and on the delivery queue; once revoked it is refused (401)."""

from __future__ import annotations

import imaplib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from postmesh.common.devstack import Stack
from tests.integration.stack import wait_for
from tests.integration.test_delivery_relay import submit_for_id
from tests.integration.test_mail_end_to_end import sample_message

POSTMESH = Path(sys.executable).with_name("postmesh")  # the console script uv installed
PASSWORD = "pw-cli-1234"


class Cli:
    def __init__(self, stack: Stack, token: str, cwd: Path) -> None:
        self.cwd = cwd  # no .postmesh/admin-token there: the token comes from the environment
        self.env = {
            **os.environ,
            "POSTMESH_ADMIN_URL": f"http://127.0.0.1:{stack.ports.admin}",
            "POSTMESH_QUEUE_ADMIN_URL": f"http://127.0.0.1:{stack.ports.queue_admin}",
            "POSTMESH_ADMIN_TOKEN": token,
        }
        self.env.pop("POSTMESH_ADMIN_TOKEN_FILE", None)

    def run(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(POSTMESH), *args], input=stdin, capture_output=True, text=True,
            env=self.env, cwd=self.cwd, timeout=60,
        )  # fmt: skip

    def ok(self, *args: str, stdin: str = "") -> str:
        done = self.run(*args, stdin=stdin)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def json(self, *args: str, stdin: str = "") -> Any:
        return json.loads(self.ok(*args, "--json", stdin=stdin))

    def refused(self, status: int, *args: str, stdin: str = "") -> str:
        """The command fails with exit status 1 and the API's status and reason on stderr."""
        done = self.run(*args, stdin=stdin)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert done.stderr.startswith(f"postmesh: error: {status} "), (args, done.stderr)
        assert done.stdout == ""
        return done.stderr


def imap_login(stack: Stack, user: str, password: str) -> None:
    with imaplib.IMAP4("127.0.0.1", stack.ports.imap) as imap:
        imap.login(user, password)
        imap.logout()


def test_cli_runs_accounts_and_domain_admins(stack: Stack, tmp_path: Path) -> None:
    admin = Cli(stack, stack.admin_token(), tmp_path)
    tag = uuid.uuid4().hex[:8]
    mine, theirs = f"cli-{tag}.test", f"cli-other-{tag}.test"

    # -- the admin: domains, users, aliases, quotas, listings --
    assert admin.ok("whoami").splitlines()[0].split() == ["role", "admin"]
    assert admin.ok("domains", "create", mine) == f"name  {mine}\n"
    assert admin.json("domains", "create", theirs) == {"name": theirs}
    out = admin.ok("users", "create", f"Ann@{mine}", "--password-stdin", stdin=PASSWORD + "\n")
    assert out == f"address  ann@{mine}\n"
    admin.ok("users", "create", f"ann@{theirs}", "--password-stdin", stdin=PASSWORD + "\n")
    imap_login(stack, f"ann@{mine}", PASSWORD)  # the account is real
    alias = admin.json("aliases", "create", f"team@{mine}", f"ann@{mine}", "Far@remote.example")
    assert alias == {"address": f"team@{mine}", "targets": [f"ann@{mine}", "Far@remote.example"]}
    admin.refused(409, "aliases", "create", f"team@{mine}", f"ann@{mine}")
    admin.refused(422, "users", "create", f"a b@{mine}", "--password-stdin", stdin="pw-long-1\n")

    # Quotas go through auth to the real store.
    quota = admin.json("quota", "set", f"ann@{mine}", "--storage", "10M", "--messages", "100")
    assert quota["storage_limit_bytes"] == 10 * 1024**2 and quota["message_limit"] == 100
    assert admin.json("quota", "set", f"ann@{mine}", "--messages", "50")["storage_limit_bytes"] == (
        10 * 1024**2
    )
    table = admin.ok("quota", "show", f"ann@{mine}").splitlines()
    assert table[0].split() == ["RESOURCE", "USED", "LIMIT"]
    assert table[1].split()[-2:] == ["10.0", "MiB"] and table[2].split()[-1] == "50"

    assert admin.json("users", "list", "--domain", mine) == [{"address": f"ann@{mine}"}]
    assert admin.ok("users", "list", "--domain", mine).splitlines() == ["ADDRESS", f"ann@{mine}"]
    assert admin.json("aliases", "list", "--domain", mine) == [alias]
    lines = admin.ok("aliases", "list", "--domain", mine).splitlines()
    assert lines[0].split() == ["ALIAS", "TARGETS"]
    assert lines[1].split() == [f"team@{mine}", f"ann@{mine},", "Far@remote.example"]
    keys = admin.json("dkim", "list", mine)
    assert sorted(k["algorithm"] for k in keys) == ["ed25519-sha256", "rsa-sha256"]
    records = admin.ok("dkim", "dns-records", mine)
    assert all(k["dns_name"] in records for k in keys)

    # -- a domain-admin token, issued with the CLI --
    issued = admin.json("tokens", "create", "--domain", mine, "--label", "cli test")
    assert issued["role"] == "domain-admin" and issued["domains"] == [mine]
    listed = admin.json("tokens", "list")
    assert issued["id"] in [t["id"] for t in listed]
    assert all("token" not in t for t in listed)
    domain_admin = Cli(stack, issued["token"], tmp_path)
    assert domain_admin.json("whoami") == {
        "role": "domain-admin", "domains": [mine], "token_id": issued["id"],
    }  # fmt: skip

    # Its own domain: users, aliases, quotas, catch-all, DKIM.
    domain_admin.ok("users", "create", f"bob@{mine}", "--password-stdin", stdin=PASSWORD + "\n")
    imap_login(stack, f"bob@{mine}", PASSWORD)
    assert domain_admin.json("domains", "list") == [{"name": mine}]
    assert domain_admin.json("users", "list") == [
        {"address": f"ann@{mine}"}, {"address": f"bob@{mine}"},
    ]  # fmt: skip
    domain_admin.ok("aliases", "set", f"team@{mine}", f"bob@{mine}")
    domain_admin.ok("quota", "set", f"bob@{mine}", "--storage", "1G")
    domain_admin.ok("catch-all", "set", mine, f"bob@{mine}")
    domain_admin.ok("dkim", "rotate", mine, "--algorithm", "ed25519-sha256", "--activate-in", "1d")

    # Everything else: 403 with the reason, over the wire, and nothing changed.
    err = domain_admin.refused(403, "domains", "create", f"new-{tag}.test")
    assert "creating domains needs the admin role" in err
    for args in (
        ("users", "create", f"eve@{theirs}", "--password-stdin"),
        ("users", "list", "--domain", theirs),
        ("users", "show", f"ann@{theirs}"),
        ("users", "disable", f"ann@{theirs}"),
        ("users", "password", f"ann@{theirs}", "--password-stdin"),
        ("users", "delete", f"ann@{theirs}"),
        ("quota", "set", f"ann@{theirs}", "--storage", "1"),
        ("aliases", "create", f"x@{theirs}", f"bob@{mine}"),
        ("aliases", "create", f"x@{mine}", f"ann@{theirs}"),  # pointing into another domain
        ("catch-all", "set", theirs, f"bob@{mine}"),
        ("dkim", "list", theirs),
        ("dkim", "rotate", theirs),
        ("dkim", "dns-records", theirs),
    ):
        err = domain_admin.refused(403, *args, stdin=PASSWORD + "\n")
        assert f"domain {theirs} is not one of this token's domains ({mine})" in err, args
    for admin_only in (["tokens", "list"], ["tokens", "create", "--domain", theirs]):
        assert "needs the admin role" in domain_admin.refused(403, *admin_only)
    assert "domain-admin tokens have no access" in domain_admin.refused(403, "queue", "list")
    assert admin.json("users", "show", f"ann@{theirs}") == {
        "address": f"ann@{theirs}", "disabled": False,
    }  # fmt: skip
    imap_login(stack, f"ann@{theirs}", PASSWORD)
    assert admin.json("users", "list", "--domain", theirs) == [{"address": f"ann@{theirs}"}]
    assert f"new-{tag}.test" not in admin.ok("domains", "list")

    # Revoked: the next request is refused.
    assert admin.json("tokens", "revoke", issued["id"]) == {"id": issued["id"], "revoked": True}
    assert "missing or invalid bearer token" in domain_admin.refused(401, "whoami")
    admin.refused(404, "tokens", "revoke", issued["id"])


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
def test_cli_queue_list_show_retry_delete(stack: Stack, tmp_path: Path) -> None:
    """A message to a domain whose DNS look-up fails (the test resolver refuses it) waits in
    the deferred queue; the CLI lists, shows, retries and deletes it."""
    admin = Cli(stack, stack.admin_token(), tmp_path)
    domain = f"cliq-{uuid.uuid4().hex[:8]}.test"
    admin.ok("domains", "create", domain)
    sender = f"sender@{domain}"
    admin.ok("users", "create", sender, "--password-stdin", stdin=PASSWORD + "\n")
    rcpt = "someone@unresolvable.zz"
    queue_id = submit_for_id(stack, sender, PASSWORD, rcpt, sample_message(sender, rcpt, "cli"))

    def entry() -> dict[str, Any] | None:
        done = admin.run("queue", "show", queue_id, "--json")
        if done.returncode != 0:
            return None
        entries = json.loads(done.stdout)
        return entries[0] if entries and entries[0]["attempts"] >= 1 else None

    first = wait_for(entry, 60, "the deferred entry")
    assert first["recipient"] == rcpt and first["sender"] == sender and first["last_error"]
    assert queue_id in [e["queue_id"] for e in admin.json("queue", "list")]
    table = admin.ok("queue", "list").splitlines()
    assert table[0].startswith("QUEUE ID") and any(line.startswith(queue_id) for line in table)
    assert admin.ok("queue", "show", queue_id).splitlines()[1].startswith(queue_id)

    def act(*args: str) -> Any:
        """A worker may hold the entry this moment (409): ask again."""
        done = wait_for(
            lambda: ((d := admin.run(*args, "--json")).returncode == 0 and d) or None, 30, str(args)
        )
        return json.loads(done.stdout)

    assert act("queue", "retry", queue_id)["action"] == "retrying"
    wait_for(lambda: ((e := entry()) and e["attempts"] >= 2 and e) or None, 60, "the retry")
    deleted = act("queue", "delete", queue_id)
    assert deleted["action"] == "deleted" and deleted["entries"][0]["recipient"] == rcpt
    admin.refused(404, "queue", "show", queue_id)
    trace = admin.json("queue", "trace", queue_id)
    assert [s["step"] for s in trace["steps"]][:1] == ["accepted"]
    assert "deferred" in [s["step"] for s in trace["steps"]]
