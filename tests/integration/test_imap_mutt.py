"""Mutt, run in a terminal (tmux) and typed at like a person would, against the whole system on
both backends: IMAP over implicit TLS, submission over implicit TLS, both verifying the dev
certificate. What mutt did is then checked on the server with imaplib: a message read (\\Seen), one
flagged, one deleted and expunged, one saved to a new folder (copied, removed from INBOX), and one
composed and sent, its copy APPENDed to Sent (``record``) and the message delivered. On the way,
mail arriving while the mailbox is open must show up in mutt's index (EXISTS on its NOOP poll)."""

from __future__ import annotations

import imaplib
import re
import uuid
from pathlib import Path

from postmesh.common.devstack import Stack
from tests.integration.stack import wait_for
from tests.integration.test_mail_end_to_end import (
    create_user,
    folder_flags,
    insecure_tls,
    sample_message,
    submit,
)
from tests.integration.tmux import Terminal


def _muttrc(stack: Stack, user: str, password: str, editor: Path) -> str:
    login = user.replace("@", "%40")
    return f"""\
set folder="imaps://{login}@127.0.0.1:{stack.ports.imaps}/"
set spoolfile="+INBOX"
set imap_pass="{password}"
set smtp_url="smtps://{login}@127.0.0.1:{stack.ports.smtp_submissions}/"
set smtp_pass="{password}"
# The dev certificate is self-signed for localhost and 127.0.0.1: trusting it as the CA gives
# full verification, hostname included, with no question asked.
set ssl_ca_certificates_file="{stack.data_dir / "tls-cert.pem"}"
set ssl_force_tls=yes
set certificate_file="{editor.parent / "certificates"}"
set from="{user}"
set realname="Mutt Tester"
set hostname="example.test"
set record="=Sent"
set copy=yes
set editor="{editor}"
set confirmcreate=no
set confirmappend=no
set delete=yes
set move=no
set sleep_time=0
# Wake every second and poll the open mailbox (NOOP) so new mail shows without a keypress.
set timeout=1
set mail_check=1
set wait_key=no
set arrow_cursor=yes
set sort=subject
# One line per message, easy to read back: number, status flags (N new, D deleted, ! flagged).
set index_format="%4C [%Z] %s"
set header_cache=""
set message_cachedir=""
"""


def _folder(stack: Stack, user: str, password: str, name: str) -> dict[str, set[str]]:
    """Subject -> flags of every message in one folder on the server."""
    with imaplib.IMAP4(host="127.0.0.1", port=stack.ports.imap) as imap:
        imap.starttls(insecure_tls())
        imap.login(user, password)
        return folder_flags(imap, name)


def _body(stack: Stack, user: str, password: str, name: str, subject: str) -> bytes:
    with imaplib.IMAP4(host="127.0.0.1", port=stack.ports.imap) as imap:
        imap.starttls(insecure_tls())
        imap.login(user, password)
        imap.select(name, readonly=True)
        typ, data = imap.uid("SEARCH", "SUBJECT", f'"{subject}"')
        assert typ == "OK" and data[0], (name, subject, data)
        typ, fetched = imap.uid("FETCH", data[0].decode().split()[0], "(BODY.PEEK[])")
        assert typ == "OK" and isinstance(fetched[0], tuple)
        body = fetched[0][1]
        assert isinstance(body, bytes)
        return body


def _index_line(subject: str, flags: str = "...", cursor: bool = False) -> str:
    """A regex for ``subject``'s line in the index, with status flags matching ``flags``."""
    return ("^->" if cursor else "^(?:->)?") + rf" *\d+ \[{flags}\] {re.escape(subject)}$"


def _select(term: Terminal, subject: str) -> None:
    """Moves the cursor to ``subject`` with mutt's search."""
    term.keys("/")
    term.wait("^Search for:")
    term.type(subject)
    term.keys("Enter")
    term.wait(_index_line(subject, cursor=True))


def test_mutt_reads_flags_deletes_moves_and_sends(stack: Stack, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex[:10]
    user, password = f"mutt-{marker}@example.test", "mutt-pw-1"
    peer, peer_password = f"mutt-peer-{marker}@example.test", "mutt-pw-2"
    create_user(stack, user, password)
    create_user(stack, peer, peer_password)
    actions = ("read", "flag", "delete", "move")
    for action in actions:
        submit(stack, user, password, sample_message(user, user, f"{marker}-{action}"))
    wait_for(lambda: len(_folder(stack, user, password, "INBOX")) == 4 or None, what="4 messages")
    subject = {action: f"end to end {marker}-{action}" for action in actions}
    sent_subject = f"composed in mutt {marker}"

    # The composer's editor: what a person would type into the body.
    editor = tmp_path / "editor.sh"
    editor.write_text(f'#!/bin/sh\nprintf "Written in mutt {marker}.\\n" >> "$1"\n')
    editor.chmod(0o755)
    muttrc = tmp_path / "muttrc"
    muttrc.write_text(_muttrc(stack, user, password, editor))
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    term = Terminal(tmp_path, ["mutt", "-n", "-F", str(muttrc)], env)
    try:
        for s in subject.values():
            term.wait(_index_line(s))
        term.wait(r"Msgs:4 New:4")

        # Read: the pager shows the body; mutt fetches with BODY.PEEK and stores \Seen itself.
        _select(term, subject["read"])
        term.keys("Enter")
        term.wait("^Hello from the integration test.$")
        term.keys("i")
        term.wait(_index_line(subject["read"], flags="[^N]..", cursor=True))

        _select(term, subject["flag"])
        term.keys("F")
        term.wait(_index_line(subject["flag"], flags="..!"))

        _select(term, subject["delete"])
        term.keys("d")
        term.wait(_index_line(subject["delete"], flags=".D."))

        # Save to a folder that does not exist yet: mutt CREATEs it, COPYs, marks the original
        # deleted.
        _select(term, subject["move"])
        term.keys("s")
        term.wait(r"^Save to mailbox .*:")
        term.keys("C-u")
        term.type("=Receipts")
        term.keys("Enter")
        term.wait(_index_line(subject["move"], flags=".D."))

        # Sync: flags stored, deleted messages expunged.
        term.keys("$")
        term.wait(r"Msgs:2 ")
        screen = term.screen()
        assert subject["delete"] not in screen and subject["move"] not in screen, screen

        # New mail while the mailbox is open: the server reports it (EXISTS) and mutt lists it.
        arrived = f"{marker}-arrived"
        submit(stack, user, password, sample_message(user, user, arrived))
        term.wait(_index_line(f"end to end {arrived}", flags="N.."))
        term.wait(r"Msgs:3 ")

        term.keys("m")
        term.wait("^To:")
        term.type(peer)
        term.keys("Enter")
        term.wait("^Subject:")
        term.type(sent_subject)
        term.keys("Enter")
        term.wait(r"^y:Send ")  # the compose menu, after the editor ran
        term.keys("y")
        term.wait(r"^Mail sent\.")

        term.keys("q")
        wait_for(lambda: term.exited() or None, what="mutt to quit")
    finally:
        term.close()

    inbox = _folder(stack, user, password, "INBOX")
    assert set(inbox) == {subject["read"], subject["flag"], f"end to end {arrived}"}, inbox
    assert "\\Seen" in inbox[subject["read"]]
    assert "\\Flagged" not in inbox[subject["read"]]
    assert inbox[subject["flag"]] >= {"\\Flagged"}
    assert "\\Seen" not in inbox[subject["flag"]]
    assert set(_folder(stack, user, password, "Receipts")) == {subject["move"]}
    assert _body(stack, user, password, "Receipts", subject["move"]).endswith(
        sample_message(user, user, f"{marker}-move")
    )

    sent = _folder(stack, user, password, "Sent")
    assert set(sent) == {sent_subject}, sent
    sent_copy = _body(stack, user, password, "Sent", sent_subject)
    assert f"Written in mutt {marker}.".encode() in sent_copy
    message_id = re.search(rb"^Message-ID: (<[^>]+>)", sent_copy, re.MULTILINE | re.IGNORECASE)
    assert message_id, sent_copy

    wait_for(
        lambda: sent_subject in _folder(stack, peer, peer_password, "INBOX") or None,
        what="the sent message at the recipient",
    )
    delivered = _body(stack, peer, peer_password, "INBOX", sent_subject)
    assert message_id.group(1) in delivered
    assert f"Written in mutt {marker}.".encode() in delivered
