#!/usr/bin/env bash
# Tags a local stand-in for the Containerfiles' BASE_IMAGE (python:3.11-slim-bookworm) on a
# machine without an image registry: Debian bookworm (debootstrap) with its Python 3.11 and pip,
# built and cached by scripts/containers/base-image.sh. Needs root, debootstrap and podman.
#   scripts/helm/make-base-image.sh [image name]   (default docker.io/library/python:3.11-slim-bookworm)
set -euo pipefail
name=${1:-docker.io/library/python:3.11-slim-bookworm}
base=$(bash "$(dirname "$0")/../containers/base-image.sh")
podman tag "$base" "$name"
echo "make-base-image: tagged $name" >&2
