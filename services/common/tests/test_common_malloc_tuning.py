"""ADR 0057: fixed glibc malloc thresholds keep large buffers out of fresh mmaps; glibc's own
environment variables win over them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_PROBE = """
import resource, sys
from postmesh.common.malloc_tuning import keep_large_buffers
tuned = keep_large_buffers()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
keep = []
for _ in range(3):  # warm up
    keep.append(b"x" * (2 << 20)); keep.clear()
before = faults()
for _ in range(20):
    keep.append(b"x" * (2 << 20)); keep.clear()
print(int(tuned), (faults() - before) // 20)
"""


def _run(env: dict[str, str]) -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "1", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_buffers_are_reused_without_page_faults() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    tuned, faults = _run(env)
    assert tuned
    # A 2 MiB buffer is 512 pages: reused from the heap, it faults (almost) none of them.
    assert faults < 16
    # An operator's setting is kept: here glibc's default threshold, fixed, so each 2 MiB
    # buffer is a fresh mmap whose pages fault in as they are written.
    tuned, faults = _run({**env, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)})
    assert not tuned
    assert faults >= 256
