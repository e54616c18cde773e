#!/usr/bin/env bash
# Installs helm (a pinned v3 release) into $POSTMESH_CACHE/bin once, built from source with
# `go install` (no registry or release download needed; helm's go.mod has no replace directives).
# Prints the path of the helm binary. Idempotent: a binary of the pinned version is reused.
set -euo pipefail
version=${POSTMESH_HELM_VERSION:-v3.22.0}
cache=${POSTMESH_CACHE:-$HOME/.cache/postmesh}
bindir=$cache/bin
# The suffix names the build recipe below: bump it when the recipe changes so caches rebuild.
target=$bindir/helm-$version-r2
if [ ! -x "$target" ]; then
  if ! command -v go >/dev/null; then
    echo "ensure-helm: Go (1.24+) is required to build helm $version; install Go or put a helm $version binary at $target" >&2
    exit 1
  fi
  echo "ensure-helm: building helm $version into $bindir (once; takes a few minutes)" >&2
  mkdir -p "$bindir"
  tmp=$(mktemp -d "$bindir/.helm-build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # The release Makefile's ldflags: without them `helm version` says "main" and helm assumes
  # Kubernetes 1.20 for `helm template`/`lint` (Capabilities.KubeVersion, deprecation checks)
  # instead of the client-go version it was built against.
  gomod=$(go mod download -json "helm.sh/helm/v3@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
  k8s_minor=$(sed -n 's#^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' "$gomod" | head -n1)
  [ -n "$k8s_minor" ] || { echo "ensure-helm: cannot read helm's client-go version from $gomod" >&2; exit 1; }
  ldflags="-w -s -X helm.sh/helm/v3/internal/version.version=$version"
  for pkg in pkg/lint/rules pkg/chartutil; do
    ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$k8s_minor"
  done
  # CGO off: a static binary that does not depend on the build machine's libc.
  CGO_ENABLED=0 GOBIN=$tmp go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$version" >&2
  # Rename into place so a concurrent caller never runs half a file.
  mv "$tmp/helm" "$target"
fi
ln -sfn "$(basename "$target")" "$bindir/helm"
echo "$target"
