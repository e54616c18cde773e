#!/usr/bin/env bash
# Installs helm (a pinned v3 release) into $POSTMESH_CACHE/bin once, built from source with
# `go install` (no registry or release download needed; helm's go.mod has no replace directives).
# Prints the path of the helm binary. Idempotent: a binary of the pinned version is reused.
set -euo pipefail
version=${POSTMESH_HELM_VERSION:-v3.22.0}
cache=${POSTMESH_CACHE:-$HOME/.cache/postmesh}
bindir=$cache/bin
target=$bindir/helm-$version
if [ ! -x "$target" ]; then
  if ! command -v go >/dev/null; then
    echo "ensure-helm: Go (1.24+) is required to build helm $version; install Go or put a helm $version binary at $target" >&2
    exit 1
  fi
  echo "ensure-helm: building helm $version into $bindir (once; takes a few minutes)" >&2
  mkdir -p "$bindir"
  tmp=$(mktemp -d "$bindir/.helm-build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # CGO off: a static binary that does not depend on the build machine's libc.
  CGO_ENABLED=0 GOBIN=$tmp go install "helm.sh/helm/v3/cmd/helm@$version" >&2
  # Rename into place so a concurrent caller never runs half a file.
  mv "$tmp/helm" "$target"
fi
ln -sfn "helm-$version" "$bindir/helm"
echo "$target"
