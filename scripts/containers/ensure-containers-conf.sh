#!/usr/bin/env bash
# /etc/containers/containers.conf for podman on these machines, written only if absent (a machine
# with its own configuration keeps it; we only warn if it looks incompatible).
# runc, not crun: crun fails here on rlimits and on the hybrid cgroup layout. cgroupfs and the file
# events logger: no systemd session is needed. ulimits: the services' many connections.
set -euo pipefail
conf=/etc/containers/containers.conf
if [ -e "$conf" ]; then
  grep -Eq '^\s*runtime\s*=\s*"runc"' "$conf" \
    || echo "ensure-containers-conf: $conf exists without runtime = \"runc\"; left as is" >&2
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo -n"
$sudo mkdir -p /etc/containers
$sudo tee "$conf" >/dev/null <<'CONF'
# Written by postmesh scripts/containers/ensure-containers-conf.sh (docs/adr/0034).
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
echo "ensure-containers-conf: wrote $conf" >&2
