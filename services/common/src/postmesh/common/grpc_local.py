"""Internal gRPC on a Unix domain socket (``unix:/path``), for services that share one machine
and one user, as ``make run`` starts them (ADR 0073).

Such a socket is reached only by processes of this machine that may write to it, which the
kernel decides by file permissions: the socket is made 0600 (in a 0700 directory when the server
creates it), so only its owner (and root) can connect. That is the whole of its access control:
there is no TLS on it and so no caller identity for the per-method policy (ADR 10), which on one
machine and one user protects nothing that the file permissions do not (every process of that
user can read every service's key). TCP addresses keep mutual TLS.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from pathlib import Path

PREFIX = "unix:"


def is_local_socket(address: str) -> bool:
    """``unix:/path`` (or gRPC's ``unix:relative``) rather than ``host:port``."""
    return address.startswith(PREFIX)


def socket_path(address: str) -> Path:
    return Path(address.removeprefix(PREFIX).removeprefix("//"))


def claim(address: str) -> Path:
    """Ready ``address``'s path for a server to bind: its directory made, closed to others
    (0700), when missing; an existing one is the operator's and keeps its mode (it may be
    /run or /tmp). A socket file left by a process that died is removed (gRPC would remove it
    too); one that a live server still answers on is refused, so a second server started with
    the same address fails instead of silently taking the first one's clients."""
    path = socket_path(address)
    if not path.parent.is_dir():
        path.parent.mkdir(mode=0o700, parents=True)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return path
    if not stat.S_ISSOCK(mode):
        raise OSError(f"cannot serve gRPC on {address}: {path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # nothing answers: left by a process that died
            return path
    raise OSError(f"cannot serve gRPC on {address}: another server is listening there")


def restrict(path: Path) -> None:
    """The bound socket readable and writable by its owner only."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, 0o600)
