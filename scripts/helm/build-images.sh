#!/usr/bin/env bash
# Builds the six service images with podman (or buildah/docker via CONTAINER_CLI) and tags them
# <repository>/<service>:<tag>, as the chart's image.repository expects.
#   scripts/helm/build-images.sh [service...]       (default: all six)
# Env: IMAGE_REPOSITORY (localhost/postmesh), IMAGE_TAG (the chart's appVersion),
#      BASE_IMAGE (python:3.11-slim-bookworm or a local stand-in), CONTAINER_CLI (podman),
#      BUILD_ARGS (extra arguments, e.g. a CA bundle mount for a proxy).
# The build context holds only what the images need (root pyproject.toml and uv.lock, each
# service's pyproject.toml and src/), so a dirty checkout (.venv, .postmesh/) is never sent.
set -euo pipefail
cd "$(dirname "$0")/../.."
cli=${CONTAINER_CLI:-podman}
repo=${IMAGE_REPOSITORY:-localhost/postmesh}
tag=${IMAGE_TAG:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' deploy/helm/postmesh/Chart.yaml)}
all=(smtp-edge imap-gw pop3-gw delivery auth store)
services=("$@")
[ ${#services[@]} -gt 0 ] || services=("${all[@]}")
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
members=()
for d in services/*/; do members+=("${d}pyproject.toml" "${d}src"); done
tar -c --exclude=__pycache__ --exclude='*.pyc' pyproject.toml uv.lock "${members[@]}" | tar -x -C "$ctx"
for svc in "${services[@]}"; do
  [ -f "services/$svc/Containerfile" ] || { echo "build-images: no services/$svc/Containerfile" >&2; exit 1; }
  echo "build-images: $repo/$svc:$tag" >&2
  # shellcheck disable=SC2086 # BUILD_ARGS is a list of arguments
  "$cli" build ${BUILD_ARGS:-} ${BASE_IMAGE:+--build-arg "BASE_IMAGE=$BASE_IMAGE"} \
    -f "services/$svc/Containerfile" -t "$repo/$svc:$tag" "$ctx"
done
