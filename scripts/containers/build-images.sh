#!/usr/bin/env bash
# The six service images for the container smoke test (tests/integration/test_containers.py),
# from Debian without any registry: the cached base (scripts/containers/base-image.sh), then
# scripts/helm/build-images.sh with it as BASE_IMAGE, tagged localhost/postmesh/<service>:test.
# Rebuilt each run; podman's layer cache makes that seconds when nothing changed. One build at a
# time (shared 2-core machines). Needs root. docs/adr/0034-podman-kube-play-smoke-test.md.
#   scripts/containers/build-images.sh [service...]
set -euo pipefail
cd "$(dirname "$0")/../.."
cache=${POSTMESH_CACHE:-$HOME/.cache/postmesh}
mkdir -p "$cache/containers"
base=$(bash scripts/containers/base-image.sh)
log=$cache/containers/build-images.log
# The host's CA bundle mounted into RUN steps (not baked in): HTTPS to PyPI goes through the
# machine's egress proxy, whose CA is only there.
ca=/etc/ssl/certs/ca-certificates.crt
start=$SECONDS
# Full build output in the log; the "build-images: <image>" lines on stderr as progress.
IMAGE_TAG=${IMAGE_TAG:-test} BASE_IMAGE=$base BUILD_ARGS="--layers -v $ca:$ca:ro" \
  bash scripts/helm/build-images.sh "$@" 2>&1 | tee "$log" | grep --line-buffered '^build-images: ' >&2 \
  || { tail -40 "$log" >&2; exit 1; }
echo "build-images: six images built in $((SECONDS - start)) s (log: $log)" >&2
# The images these tags named before this build (dangling now, and ours by their source label);
# the build stages' layers stay as the cache.
podman image prune -f --filter label=org.opencontainers.image.source=https://github.com/postmesh/postmesh >/dev/null
