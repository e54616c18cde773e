"""A private Dovecot 2.3 (Debian's dovecot-imapd / dovecot-pop3d) for side-by-side benches.

Its own config file in a temp dir (nothing from /etc/dovecot, no system instance), IMAP and POP3
on free 127.0.0.1 ports, plaintext auth allowed (loopback only, no TLS), a passwd-file with the
bench users, Maildir under the temp dir, and room for more than 10 sessions of one user from
one IP (the mixed load is one user on 10 clients). Everything else is Dovecot's built-in default: the
process model (one imap/pop3 process per session, login processes in high-security mode,
``auth_cache_size = 0``) and fsync behaviour (``mail_fsync = optimized``) are not tuned.

Dovecot runs as root here (``dovecot -F``, stopped by its PID on exit): as non-root it cannot
hand its unix sockets to its ``dovecot``/``dovenull`` service users, and mail processes never
run as root, so the mailbox belongs to ``nobody``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.integration.infra import _process, free_port
from tests.integration.infra._process import InfraError, LocalServer
from tests.integration.infra.ports import port_open

DOVECOT = "/usr/sbin/dovecot"

_CONF = """\
protocols = imap pop3
listen = 127.0.0.1
base_dir = {tmp}/run
state_dir = {tmp}/state
instance_name = postmesh-bench-{imap_port}
log_path = {tmp}/dovecot.log
ssl = no
# Loopback only; the bench logs in with LOGIN/USER+PASS like on Postmesh (ADR 4).
disable_plaintext_auth = no
mail_location = maildir:~/Maildir
# The default, 10, refuses the 11th session of the one bench user from 127.0.0.1: the mixed load
# runs 10 clients, and a logged-out session's process may still be exiting at the next LOGIN.
mail_max_userip_connections = 100
passdb {{
  driver = passwd-file
  args = {tmp}/passwd
}}
userdb {{
  driver = passwd-file
  args = {tmp}/passwd
}}
service imap-login {{
  inet_listener imap {{
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""


class Dovecot(LocalServer):
    """``users`` maps address -> password; each gets a Maildir home under the temp dir.
    ``argon2_users`` get an ARGON2ID hash (``doveadm pw``) instead of a plaintext entry, so an
    authentication bench can show what a hashed password costs without an auth cache."""

    def __init__(self, users: dict[str, str], argon2_users: dict[str, str] | None = None) -> None:
        self.users = users
        self.argon2_users = argon2_users or {}
        self.imap_port = 0
        self.pop3_port = 0
        self._tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        assert self._tmp is not None
        return self._tmp / "dovecot.log"

    def _passwd_line(self, address: str, scheme_password: str, uid: int, gid: int) -> str:
        assert self._tmp is not None
        home = self._tmp / "home" / address
        home.mkdir(parents=True)
        os.chown(home, uid, gid)
        # passwd-file: user:password:uid:gid:(gecos):home:(shell)
        return f"{address}:{scheme_password}:{uid}:{gid}::{home}::\n"

    def _write_config(self) -> Path:
        assert self._tmp is not None
        if os.geteuid() != 0:
            raise InfraError("the Dovecot bench runs Dovecot as root (see tests/bench/dovecot.py)")
        nobody = pwd.getpwnam("nobody")
        lines = [
            self._passwd_line(a, "{PLAIN}" + p, nobody.pw_uid, nobody.pw_gid)
            for a, p in self.users.items()
        ]
        for address, password in self.argon2_users.items():
            hashed = subprocess.run(
                ["doveadm", "pw", "-s", "ARGON2ID", "-p", password],
                capture_output=True, text=True, check=True,
            ).stdout.strip()  # fmt: skip
            lines.append(self._passwd_line(address, hashed, nobody.pw_uid, nobody.pw_gid))
        (self._tmp / "passwd").write_text("".join(lines))
        conf = self._tmp / "dovecot.conf"
        conf.write_text(
            _CONF.format(tmp=self._tmp, imap_port=self.imap_port, pop3_port=self.pop3_port)
        )
        return conf

    def start(self) -> Dovecot:
        if shutil.which(DOVECOT) is None:
            raise InfraError("dovecot is not installed (scripts/ensure-tools.sh installs it)")
        self._tmp = Path(tempfile.mkdtemp(prefix="postmesh-dovecot-"))
        # Mail processes (as nobody) reach their home through it; login processes chroot into
        # base_dir/login.
        self._tmp.chmod(0o755)
        self.imap_port, self.pop3_port = free_port(), free_port()
        try:
            conf = self._write_config()
            with (self._tmp / "master.out").open("wb") as out:
                self._proc = subprocess.Popen(
                    [DOVECOT, "-c", str(conf), "-F"],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            _process.register(self._proc)
            out_log = self._tmp / "master.out"

            def probe() -> str | None:
                if port_open("127.0.0.1", self.imap_port) and port_open(
                    "127.0.0.1", self.pop3_port
                ):
                    return None
                return "its IMAP and POP3 ports are not both listening yet"

            try:
                _process.wait_ready(self._proc, "dovecot", 30, out_log, probe, 0.1)
            except InfraError as e:
                raise InfraError(f"{e}\n{_process.log_tail(self.log_path)}") from None
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int:
        """The master process's; its children serve the sessions."""
        assert self._proc is not None
        return self._proc.pid

    def stop(self) -> None:
        if self._proc is not None:
            # SIGTERM to the master: it stops its own service processes before exiting.
            _process.stop_process(self._proc, 15)
            self._proc = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
