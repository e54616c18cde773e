"""OpenDKIM's own verifier (``opendkim-testmsg`` from Debian's opendkim-tools) as a second,
independent judge of the signatures delivery makes.

libopendkim looks keys up through the system resolver (/etc/resolv.conf, port 53 only), so the
check runs in a private network and mount namespace made for it (``unshare``, root): a dnsmasq
on that namespace's own 127.0.0.1:53 serves the key records, and a resolv.conf naming it is
bind-mounted over /etc/resolv.conf there only. Nothing of the machine's resolver changes, and
no query leaves the namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.integration.infra._process import InfraError
from tests.integration.infra.dnsmasq import txt_line

_SCRIPT = r"""
set -u
ip link set lo up
mount --bind "$1/resolv.conf" /etc/resolv.conf
"$2" --keep-in-foreground --port=53 --listen-address=127.0.0.1 --bind-interfaces \
     --no-resolv --no-hosts --conf-file=/dev/null --conf-file="$1/records.conf" \
     --local=/"$3"/ --user=root --log-facility="$1/dnsmasq.log" &
dns=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/53) 2>/dev/null && break; sleep 0.05; done
opendkim-testmsg < "$1/message.eml"
rc=$?
kill "$dns"
wait "$dns" 2>/dev/null
exit "$rc"
"""


@dataclass(frozen=True)
class Verdict:
    returncode: int  # 0: every signature opendkim-testmsg checked verified
    output: str  # its complaint when not

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def opendkim_verify(message: bytes, txt: list[tuple[str, str]], zone: str = "test") -> Verdict:
    """Verify ``message`` (CRLF or LF) with opendkim-testmsg against the TXT records ``txt``
    served for ``zone`` in a namespace of its own."""
    if shutil.which("opendkim-testmsg") is None:
        raise InfraError("opendkim-testmsg is missing (scripts/ensure-tools.sh installs it)")
    if os.geteuid() != 0:
        raise InfraError("the OpenDKIM check needs root for its network namespace (unshare)")
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    with tempfile.TemporaryDirectory(prefix="postmesh-opendkim-") as tmp:
        d = Path(tmp)
        (d / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        (d / "records.conf").write_text("".join(txt_line(n, t) + "\n" for n, t in txt))
        (d / "message.eml").write_bytes(message)
        done = subprocess.run(
            ["unshare", "--net", "--mount", "bash", "-c", _SCRIPT, "opendkim", tmp, dnsmasq, zone],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        return Verdict(done.returncode, (done.stdout + done.stderr).strip())
