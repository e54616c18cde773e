"""A full-screen terminal program driven through tmux, as a person at a keyboard would: keys in
with send-keys, the screen read back with capture-pane. The tmux server is private to the test
(its own socket, no user configuration) and stops when the test ends."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.integration.stack import wait_for

# The terminal tmux emulates; its terminfo entry ships with ncurses-base.
TERM = "screen"
COLUMNS, LINES = 120, 40


class Terminal:
    def __init__(self, workdir: Path, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self._socket = workdir / "tmux.sock"
        conf = workdir / "tmux.conf"
        # remain-on-exit: a program that dies early leaves its last screen for the failure message.
        conf.write_text("set -g remain-on-exit on\nset -g history-limit 0\n")
        command = ["env", "-i", f"TERM={TERM}", *(f"{k}={v}" for k, v in env.items()), *argv]
        self._tmux(
            "-f", str(conf), "new-session", "-d", "-x", str(COLUMNS), "-y", str(LINES), *command
        )

    def _tmux(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-S", str(self._socket), *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={"PATH": "/usr/bin:/bin", "TMUX_TMPDIR": str(self._socket.parent)},
        )
        assert result.returncode == 0, f"tmux {args[0]}: {result.stderr}"
        return result.stdout

    def keys(self, *keys: str) -> None:
        """Named keys (Enter, Escape, C-u) or single characters, one key each."""
        self._tmux("send-keys", *keys)

    def type(self, text: str) -> None:
        """Literal text, not interpreted as key names."""
        self._tmux("send-keys", "-l", text)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p")

    def wait(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """Waits until the screen shows ``pattern`` (a multi-line regex; capture-pane drops
        trailing spaces)."""
        regex = re.compile(pattern, re.MULTILINE)
        try:
            return wait_for(lambda: regex.search(self.screen()), timeout, what=pattern)
        except AssertionError as e:
            raise AssertionError(f"{e}; screen:\n{self.screen()}") from None

    def exited(self) -> bool:
        return self._tmux("display-message", "-p", "#{pane_dead}").strip() == "1"

    def close(self) -> None:
        """Stops this test's own tmux server (and the program, if it still runs)."""
        if self._socket.exists():
            subprocess.run(
                ["tmux", "-S", str(self._socket), "kill-server"],
                capture_output=True,
                timeout=30,
                check=False,
            )
