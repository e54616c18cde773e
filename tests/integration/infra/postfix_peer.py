"""Real remote MTAs for delivery tests: a Postfix instance of its own (``master -c <dir>``,
own main.cf/master.cf, a free port on 127.0.0.1, delivering every recipient of its domains to
one Maildir), and Postfix's smtp-sink for scripted 4xx/5xx answers on any 127.0.0.x."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.integration.infra import _process
from tests.integration.infra._process import InfraError, LocalServer
from tests.integration.infra.ports import free_port_for, port_open

POSTFIX_MASTER = Path("/usr/lib/postfix/sbin/master")

_MASTER_CF = """\
{listen}  inet  n  -  n  -  -  smtpd
pickup    unix  n  -  n  60   1  pickup
cleanup   unix  n  -  n  -    0  cleanup
qmgr      unix  n  -  n  300  1  qmgr
rewrite   unix  -  -  n  -    -  trivial-rewrite
bounce    unix  -  -  n  -    0  bounce
defer     unix  -  -  n  -    0  bounce
trace     unix  -  -  n  -    0  bounce
verify    unix  -  -  n  -    1  verify
flush     unix  n  -  n  1000? 0 flush
proxymap  unix  -  -  n  -    -  proxymap
smtp      unix  -  -  n  -    -  smtp
relay     unix  -  -  n  -    -  smtp
showq     unix  n  -  n  -    -  showq
error     unix  -  -  n  -    -  error
retry     unix  -  -  n  -    -  error
discard   unix  -  -  n  -    -  discard
local     unix  -  n  n  -    -  local
virtual   unix  -  n  n  -    -  virtual
anvil     unix  -  -  n  -    1  anvil
scache    unix  -  -  n  -    1  scache
tlsmgr    unix  -  -  n  1000? 1 tlsmgr
postlog   unix-dgram n - n -  1  postlogd
"""


def free_port_on(*hosts: str) -> int:
    """A TCP port free on every one of ``hosts`` (127.0.0.x), so several peers can share the
    one remote SMTP port the delivery service is configured with."""
    return free_port_for(hosts)


def _wait_port(proc: subprocess.Popen[bytes], host: str, port: int, log: Path, what: str) -> None:
    def probe() -> str | None:
        return None if port_open(host, port) else f"not listening on {host}:{port}"

    _process.wait_ready(proc, what, 30, log, probe, 0.1)


class PostfixPeer(LocalServer):
    """Postfix accepting mail for ``domains`` on 127.0.0.1:``port`` into ``maildir``; each
    RCPT for one of ``slow_domains`` takes a second (Postfix's ``sleep`` restriction), so a
    test can catch a batch in flight; each RCPT for one of ``refused_domains`` is refused
    with ``refused_reply`` (a ``check_recipient_access`` verdict)."""

    def __init__(
        self,
        port: int,
        domains: list[str],
        hostname: str = "mx.peer.test",
        slow_domains: tuple[str, ...] = (),
        relayhost: str = "",
        tls: tuple[Path, Path] | None = None,
        refused_domains: tuple[str, ...] = (),
        refused_reply: str = "550 5.1.1 no such user here",
    ) -> None:
        """``relayhost`` (``[host]:port``): a relay instead, sending everything there.
        ``tls`` (certificate, key): STARTTLS offered with them (smtpd_tls_security_level=may;
        Postfix 3.7 has no REQUIRETLS, so it stays an RFC 8689-incapable peer)."""
        self.relayhost = relayhost
        self.tls = tls
        self.port = port
        self.domains = domains + [d for d in slow_domains if d not in domains]
        self.slow_domains = slow_domains
        self.refused_domains = refused_domains
        self.refused_reply = refused_reply
        self.hostname = hostname
        self._tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def maildir(self) -> Path:
        assert self._tmp is not None
        return self._tmp / "mail" / "maildir"

    @property
    def log_path(self) -> Path:
        assert self._tmp is not None
        return self._tmp / "maillog"

    def messages(self) -> list[bytes]:
        """Every message delivered so far (Maildir new/ and cur/), oldest first."""
        files = [p for d in ("new", "cur") for p in (self.maildir / d).glob("*")]
        return [p.read_bytes() for p in sorted(files, key=lambda p: p.stat().st_mtime_ns)]

    def _write_config(self) -> Path:
        assert self._tmp is not None
        conf, queue, data, mail = (self._tmp / d for d in ("conf", "queue", "data", "mail"))
        for d in (conf, queue, data, mail):
            d.mkdir()
        nobody = pwd.getpwnam("nobody")
        postfix = pwd.getpwnam("postfix")
        os.chown(data, postfix.pw_uid, postfix.pw_gid)
        os.chown(mail, nobody.pw_uid, nobody.pw_gid)
        tls = ""
        if self.tls is not None:
            cert, key = self.tls
            tls = (
                f"smtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\n"
                "smtpd_tls_security_level = may\nsmtpd_tls_received_header = yes\n"
            )
        slow = ", ".join(
            [f"check_recipient_access inline:{{{{{d}=sleep 1}}}}" for d in self.slow_domains]
            + [
                f"check_recipient_access inline:{{{{{d}={self.refused_reply}}}}}"
                for d in self.refused_domains
            ]
        )
        (conf / "main.cf").write_text(
            f"""\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = {self.hostname}
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = {slow}
# Keep what arrives byte for byte: no header rewriting for our (loopback) client.
local_header_rewrite_clients =
virtual_mailbox_domains = {" ".join(self.domains)}
virtual_mailbox_base = {mail}
virtual_mailbox_maps = static:maildir/
virtual_uid_maps = static:{nobody.pw_uid}
virtual_gid_maps = static:{nobody.pw_gid}
maillog_file = {self._tmp}/maillog
maillog_file_prefixes = {self._tmp}
alias_maps =
alias_database =
smtp_dns_support_level = disabled
relayhost = {self.relayhost}
{tls}"""
        )
        (conf / "master.cf").write_text(_MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))
        return conf

    def start(self) -> PostfixPeer:
        self._tmp = Path(tempfile.mkdtemp(prefix="postmesh-postfix-"))
        self._tmp.chmod(0o755)
        try:
            conf = self._write_config()
            # Creates the queue directories with Postfix's ownership and modes.
            check = subprocess.run(
                ["postfix", "-c", str(conf), "check"], capture_output=True, check=False
            )
            if check.returncode != 0:
                raise InfraError(f"postfix check failed: {check.stderr.decode()}")
            with (self._tmp / "master.out").open("wb") as out:
                self._proc = subprocess.Popen(
                    [str(POSTFIX_MASTER), "-c", str(conf), "-d"],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            _process.register(self._proc)
            _wait_port(self._proc, "127.0.0.1", self.port, self.log_path, "postfix")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._proc is not None:
            _process.stop_process(self._proc, 10)
            self._proc = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


class SmtpSink(LocalServer):
    """``smtp-sink`` on ``host:port``: ``hard=("RCPT",)`` answers those commands with
    ``hard_reply`` (5xx), ``soft=(...)`` with ``soft_reply`` (4xx); everything else is
    accepted and, with ``dump``, each transaction written to a file in a temp dir."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        hard: tuple[str, ...] = (),
        hard_reply: str = "550 5.1.1 no such user here",
        soft: tuple[str, ...] = (),
        soft_reply: str = "451 4.3.0 try again later",
        dump: bool = False,
        max_messages: int = 0,
    ) -> None:
        self.host, self.port = host, port
        self.max_messages = max_messages
        self.hard, self.hard_reply = hard, hard_reply
        self.soft, self.soft_reply = soft, soft_reply
        self.dump = dump
        self._tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        assert self._tmp is not None
        return self._tmp / "smtp-sink.log"

    def dumped(self) -> list[bytes]:
        assert self._tmp is not None
        return [p.read_bytes() for p in sorted((self._tmp / "dump").rglob("*")) if p.is_file()]

    def start(self) -> SmtpSink:
        self._tmp = Path(tempfile.mkdtemp(prefix="postmesh-smtp-sink-"))
        self._tmp.chmod(0o755)
        args = ["smtp-sink", "-u", "nobody", "-h", f"sink-{self.host}"]
        if self.hard:
            args += ["-f", ",".join(self.hard), "-B", self.hard_reply]
        if self.soft:
            args += ["-r", ",".join(self.soft), "-b", self.soft_reply]
        if self.dump:
            (self._tmp / "dump").mkdir()
            os.chown(self._tmp / "dump", pwd.getpwnam("nobody").pw_uid, -1)
            args += ["-d", f"{self._tmp}/dump/%H%M%S."]
        if self.max_messages:
            args += ["-M", str(self.max_messages)]  # exits after that many messages
        args += [f"{self.host}:{self.port}", "256"]
        try:
            with self.log_path.open("wb") as out:
                self._proc = subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            _process.register(self._proc)
            _wait_port(self._proc, self.host, self.port, self.log_path, "smtp-sink")
        except BaseException:
            self.stop()
            raise
        return self

    def wait_done(self, timeout: float) -> bool:
        """With ``max_messages``: True once the sink took them all (and exited)."""
        assert self._proc is not None
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self) -> None:
        if self._proc is not None:
            _process.stop_process(self._proc, 5)
            self._proc = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
