#!/usr/bin/env bash
# The Containerfiles' BASE_IMAGE without any container registry, built once and cached:
#   localhost/postmesh/debian-base:bookworm       a debootstrap'd Debian root, `podman import`ed
#   localhost/postmesh/python-base:3.11-bookworm  + Debian's python3.11 and pip
#                                                 (scripts/containers/python-base.Containerfile),
#                                                 the stand-in for python:3.11-slim-bookworm.
# An image is reused while it carries this recipe's label; the Debian root stays in
# $POSTMESH_CACHE/containers. Prints the python base's name. Needs root and podman, debootstrap.
set -euo pipefail
cd "$(dirname "$0")"
cache=${POSTMESH_CACHE:-$HOME/.cache/postmesh}
# Bump when the recipes change, so cached base images are rebuilt.
recipe=r1
debian_image=localhost/postmesh/debian-base:bookworm
python_image=localhost/postmesh/python-base:3.11-bookworm

say() { echo "base-image: $*" >&2; }

# The Debian mirror this machine's apt uses (deb822 or one-line sources), unless DEBIAN_MIRROR.
debian_mirror() {
  local m=${DEBIAN_MIRROR:-}
  [ -n "$m" ] || m=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' \
    | grep -E '/debian/?$' | head -n1 || true)
  [ -n "$m" ] || m=$(grep -hsE '^deb\s' /etc/apt/sources.list | awk '{print $2}' \
    | grep -E '/debian/?$' | head -n1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}

has_recipe() {
  [ "$(podman image inspect --format '{{index .Labels "org.postmesh.base-recipe"}}' "$1" 2>/dev/null || true)" = "$recipe" ]
}

if ! has_recipe "$debian_image"; then
  root=$cache/containers/debian-bookworm-$recipe
  mirror=$(debian_mirror)
  if [ ! -e "$root.complete" ]; then
    say "debootstrap --variant=minbase bookworm from $mirror into $root (once, ~1 min)"
    rm -rf "$root"
    mkdir -p "$root"
    debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 \
      || { tail -20 "$root.log" >&2; exit 1; }
    # The image's apt uses the same mirror and keeps no package lists or downloaded packages.
    echo "deb $mirror bookworm main" >"$root/etc/apt/sources.list"
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
    touch "$root.complete"
  fi
  say "podman import -> $debian_image"
  tar -C "$root" -c . | podman import -q --change "LABEL org.postmesh.base-recipe=$recipe" \
    --change 'CMD ["/bin/bash"]' - "$debian_image" >/dev/null
fi

if ! has_recipe "$python_image"; then
  say "building $python_image (Debian's python3.11; once, ~1 min)"
  log=$cache/containers/python-base.log
  # No CA bundle mount here (unlike the service builds): the ca-certificates package writes
  # that file, and apt's mirror is plain HTTP with signed indexes.
  podman build --build-arg "DEBIAN_IMAGE=$debian_image" --label "org.postmesh.base-recipe=$recipe" \
    -t "$python_image" -f python-base.Containerfile . >"$log" 2>&1 \
    || { tail -30 "$log" >&2; exit 1; }
fi
echo "$python_image"
