#!/usr/bin/env bash
# Regenerates the Python code for proto/ into services/common/src/postmesh/api (one make target,
# `make proto`). With --check it generates into a temp dir and fails if the committed code differs.
set -euo pipefail
cd "$(dirname "$0")/.."
out=services/common/src/postmesh/api
gen() {
  local dest=$1
  rm -rf "$dest/postmesh/api" && mkdir -p "$dest"
  mapfile -t files < <(cd proto && find postmesh -name '*.proto' | sort)
  (cd proto && python -m grpc_tools.protoc -I . \
      --python_out="$dest" --grpc_python_out="$dest" --mypy_out="$dest" --mypy_grpc_out="$dest" \
      "${files[@]}")
  # Every generated folder a regular package, so mypy and importlib agree on names.
  find "$dest/postmesh/api" -type d -exec touch {}/__init__.py \;
}
if [ "${1:-}" = "--check" ]; then
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  gen "$tmp"
  if ! diff -r "$tmp/postmesh/api" "$out" >/dev/null; then
    echo "generated protobuf code is stale: run 'make proto'" >&2
    diff -r "$tmp/postmesh/api" "$out" | head -20 >&2
    exit 1
  fi
  echo "protobuf code is current"
else
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  gen "$tmp"
  rm -rf "$out" && mkdir -p "$(dirname "$out")" && cp -r "$tmp/postmesh/api" "$out"
  echo "generated $out"
fi
