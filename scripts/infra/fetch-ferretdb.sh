#!/usr/bin/env bash
# Ensure a FerretDB binary (MongoDB wire protocol on SQLite) is in a cache OUTSIDE the clone.
# No registry here ships mongod, so we build FerretDB from the Go module proxy once.
# Usage: scripts/infra/fetch-ferretdb.sh [version]   (env: POSTMESH_CACHE, FERRETDB_VERSION)
# Prints the binary path as the last line of stdout.
set -euo pipefail

version="${1:-${FERRETDB_VERSION:-v1.24.2}}"
cache="${POSTMESH_CACHE:-$HOME/.cache/postmesh}"
bindir="$cache/bin"
bin="$bindir/ferretdb-$version"

# Fast path: the binary only ever appears by an atomic rename of a finished build.
if [[ -x "$bin" ]]; then
  echo "$bin"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "fetch-ferretdb: 'go' not found on PATH; install Go 1.24+ (https://go.dev/doc/install or apt-get install golang)" >&2
  exit 1
fi

mkdir -p "$bindir"
# Serialise concurrent builds; the loser finds the finished binary.
exec 9>"$bindir/.lock-ferretdb-$version"
flock 9
if [[ -x "$bin" ]]; then
  echo "$bin"
  exit 0
fi

# Build into a temp dir on the same filesystem so the final mv is an atomic rename.
work="$(mktemp -d "$bindir/.tmp-ferretdb.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Not `go install pkg@version`: that also asks the proxy for the module's version list (to
# check deprecation), which the registry mirror here refuses (403). Instead download exactly
# this version and build it inside its own module, so its go.mod/go.sum pin every dependency.
# GOTOOLCHAIN=local: never try to download another Go toolchain (that host is unreachable).
# GOWORK=off and cd: no go.mod/go.work of the caller's checkout takes part.
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false GOWORK=off
cd "$work"
echo "fetch-ferretdb: building FerretDB $version (first time only, takes a few minutes)" >&2
src="$(go mod download -json "github.com/FerretDB/FerretDB@$version" </dev/null \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
if [[ -z "$src" || ! -d "$src" ]]; then
  echo "fetch-ferretdb: could not download github.com/FerretDB/FerretDB@$version" >&2
  exit 1
fi
# Its build/version/version.txt is generated from git by FerretDB's own tooling and is missing
# from the module zip, so a plain build panics at start. Build a writable copy with that file
# filled in (3 MB), as FerretDB's docs for builds without git say.
cp -R "$src" "$work/src"
chmod -R u+w "$work/src"
printf '%s\n' "$version" >"$work/src/build/version/version.txt"
printf '%s\n' "postmesh-cache" >"$work/src/build/version/package.txt"
(cd "$work/src" && go build -trimpath -o "$work/ferretdb" ./cmd/ferretdb) </dev/null >&2

# Refuse to publish a binary that cannot even print its version.
"$work/ferretdb" --version >/dev/null

mv -f "$work/ferretdb" "$bin"
echo "$bin"
