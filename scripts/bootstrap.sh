#!/usr/bin/env bash
# Makes sure uv exists (installed into the cache when the machine lacks it) and the workspace's
# locked environment is in .venv. Downloads stay in uv's own cache (~/.cache/uv) between clones.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${POSTMESH_CACHE:-$HOME/.cache/postmesh}
uv=$(command -v uv || true)
if [ -z "$uv" ]; then
  uv=$cache/uv/bin/uv
  if [ ! -x "$uv" ]; then
    command -v python3 >/dev/null || { echo "bootstrap: python3 is required" >&2; exit 1; }
    echo "bootstrap: installing uv into $cache/uv" >&2
    # --ignore-installed: a uv already in that Python (but not on PATH) would be skipped.
    python3 -m pip install --quiet --disable-pip-version-check --ignore-installed \
      --prefix "$cache/uv" uv
  fi
fi
"$uv" sync --frozen --quiet
