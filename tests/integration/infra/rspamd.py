"""A real rspamd (Debian's) on a free loopback port, for smtp-edge's content scan.

Debian's stock rules (/etc/rspamd) with a config of our own around them: one normal worker on
127.0.0.1 (no controller, proxy or fuzzy worker), its state in a temp dir, DNS only to the given
loopback server, and every module that would fetch maps or query services on the internet
switched off. The GTUBE test patterns are enabled (``enable_test_patterns``: rspamd < 3.8), so a
test picks rspamd's action by the pattern in the message (XJS... reject, YJS... add header,
ZJS... rewrite subject, AJS... no action)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.integration.infra import _process
from tests.integration.infra._process import InfraError, LocalServer
from tests.integration.infra.ports import free_port

GTUBE_TAIL = "JS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
GTUBE_REJECT = "X" + GTUBE_TAIL
GTUBE_ADD_HEADER = "Y" + GTUBE_TAIL
GTUBE_REWRITE_SUBJECT = "Z" + GTUBE_TAIL

# Modules that fetch maps over HTTPS or ask services on the internet (fuzzy storage, update
# feeds); the rest only use DNS (to our server) or nothing.
_OFFLINE = ("fuzzy_check", "rspamd_update", "multimap", "phishing", "mid", "whitelist", "rbl")

_MAIN = """\
.include "$CONFDIR/common.conf"
options {{
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}}
logging {{
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    level = "info";
}}
worker "normal" {{
    bind_socket = "127.0.0.1:{port}";
    .include "$CONFDIR/worker-normal.inc"
    count = 1;
}}
"""


class Rspamd(LocalServer):
    def __init__(self, dns_servers: str, *, startup_timeout_s: float = 60.0) -> None:
        """``dns_servers``: "127.0.0.1:port" of the test's DNS server."""
        self.dns_servers = dns_servers
        self._startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The POSTMESH_SMTP_RSPAMD_URL value for this server."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self._tmp is not None
        return self._tmp / "log" / "rspamd.log"

    def log_tail(self, lines: int = 40) -> str:
        return _process.log_tail(self.log_path, lines) if self._tmp else "(stopped)"

    def _write_config(self) -> Path:
        assert self._tmp is not None
        local = self._tmp / "local.d"
        for d in (local, self._tmp / "db", self._tmp / "run", self._tmp / "log"):
            d.mkdir(parents=True, exist_ok=True)
        (local / "options.inc").write_text(
            "enable_test_patterns = true;\n"
            f'dns {{ nameserver = ["{self.dns_servers}"]; timeout = 1s; retransmits = 1; }}\n'
        )
        for module in _OFFLINE:
            (local / f"{module}.conf").write_text("enabled = false;\n")
        main = self._tmp / "rspamd.conf"
        main.write_text(_MAIN.format(port=self.port))
        return main

    def start(self) -> Rspamd:
        binary = shutil.which("rspamd") or "/usr/bin/rspamd"
        if not Path(binary).exists():
            raise InfraError("rspamd is not installed (scripts/ensure-tools.sh installs it)")
        self._tmp = Path(tempfile.mkdtemp(prefix="postmesh-rspamd-"))
        self.port = free_port()
        main = self._write_config()
        tmp = self._tmp
        try:
            self._proc = _process.spawn(
                [
                    binary, "--no-fork", "--insecure", "-u", "root", "-g", "root",
                    "-c", str(main), f"--var=LOCAL_CONFDIR={tmp}",
                    f"--var=DBDIR={tmp / 'db'}", f"--var=RUNDIR={tmp / 'run'}",
                    f"--var=LOGDIR={tmp / 'log'}",
                ],
                tmp / "stdout.log",
            )  # fmt: skip
            _process.wait_http_ok(
                self._proc, f"{self.url}/ping", "rspamd", self._startup_timeout_s, self.log_path
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._proc is not None:
            _process.stop_process(self._proc, grace_s=10)
            self._proc = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
