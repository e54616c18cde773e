#!/usr/bin/env bash
# Tags a local stand-in for the Containerfiles' BASE_IMAGE (python:3.11-slim-bookworm) on a
# machine without an image registry: Debian bookworm (minbase, via debootstrap) with its Python
# 3.11, pip and venv, made to look like the official image (python on PATH, pip allowed to
# install into the system interpreter as there). Needs root, debootstrap and podman.
#   scripts/helm/make-base-image.sh [image name]   (default docker.io/library/python:3.11-slim-bookworm)
set -euo pipefail
name=${1:-docker.io/library/python:3.11-slim-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if podman image exists "$name"; then
  echo "make-base-image: $name exists" >&2
  exit 0
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
  bookworm "$root" "$mirror" >&2
rm -f "$root"/usr/lib/python3.*/EXTERNALLY-MANAGED
ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
ln -sf /usr/bin/python3 "$root/usr/local/bin/python3"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*
tar -C "$root" -c . | podman import --change 'CMD ["python3"]' - "$name" >&2
echo "make-base-image: tagged $name" >&2
