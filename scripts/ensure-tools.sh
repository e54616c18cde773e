#!/usr/bin/env bash
# Real mail clients the integration tests drive (Debian packages). Installs only what is missing;
# needs root (or passwordless sudo) for apt-get, as on these machines and in CI.
set -euo pipefail
need=()
command -v swaks >/dev/null || need+=(swaks)
command -v mbsync >/dev/null || need+=(isync)
command -v fetchmail >/dev/null || need+=(fetchmail)
# DNS server with test zones (SPF/DKIM/DMARC); -base: the binary without a system service.
command -v dnsmasq >/dev/null || [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
command -v getmail >/dev/null || need+=(getmail6)
# mutt driven in a terminal multiplexer (send-keys in, capture-pane out).
command -v mutt >/dev/null || need+=(mutt)
command -v tmux >/dev/null || need+=(tmux)
command -v offlineimap >/dev/null || need+=(offlineimap3)
# swaks --tls needs Net::SSLeay.
perl -MNet::SSLeay -e1 2>/dev/null || need+=(libnet-ssleay-perl libio-socket-ssl-perl)
# Delivery's peers: Postfix as the remote MX (and its smtp-sink), dnsmasq serving test zones on a
# loopback port (dnsmasq-base: the binary without a system service on :53), OpenDKIM's verifier.
command -v postfix >/dev/null || need+=(postfix)
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
command -v opendkim-testmsg >/dev/null || need+=(opendkim-tools)
# The OpenDKIM check brings up loopback in a network namespace of its own (ip, unshare).
command -v ip >/dev/null || need+=(iproute2)
# PostgreSQL, FerretDB's backend in the integration tests and the bench (a private cluster each,
# tests/integration/infra/postgres.py; the package's own cluster is left stopped).
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
# Dovecot 2.3, the IMAP/POP3 reference of `make bench` (tests/bench/dovecot.py runs its own).
[ -x /usr/sbin/dovecot ] && [ -x /usr/lib/dovecot/imap ] || need+=(dovecot-imapd)
[ -x /usr/lib/dovecot/pop3 ] || need+=(dovecot-pop3d)
# rspamd, the content scanner smtp-edge may call (tests/integration/infra/rspamd.py runs its own).
command -v rspamd >/dev/null || need+=(rspamd)
# Prometheus and promtool: the chart's alert rules are checked and unit-tested with promtool, and
# a private Prometheus scrapes a test stack (tests/integration/test_prometheus_live.py).
command -v promtool >/dev/null && [ -x /usr/bin/prometheus ] || need+=(prometheus)
# DANE tests (tests/integration/infra/dnssec.py): NSD, an authoritative server for signed test
# zones, and Unbound, a validating resolver in front of it (each run as our own child process).
command -v nsd >/dev/null || [ -x /usr/sbin/nsd ] || need+=(nsd)
[ -x /usr/sbin/unbound ] || need+=(unbound)
# The container smoke test (tests/integration/test_containers.py): podman 4.3 with runc (crun
# fails here on rlimits and the hybrid cgroup layout), debootstrap for the base image (no registry
# is reachable), CNI's dnsname plugin so pods find each other by Service name, catatonit for the
# pods' infra container. docs/adr/0034-podman-kube-play-smoke-test.md.
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v fuse-overlayfs >/dev/null || need+=(fuse-overlayfs)
command -v slirp4netns >/dev/null || need+=(slirp4netns)
command -v newuidmap >/dev/null || need+=(uidmap)
command -v catatonit >/dev/null || [ -x /usr/libexec/podman/catatonit ] || need+=(catatonit)
[ -x /usr/lib/cni/dnsname ] || need+=(golang-github-containernetworking-plugin-dnsname)
if [ ${#need[@]} -eq 0 ]; then
  bash "$(dirname "$0")/containers/ensure-containers-conf.sh"
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "ensure-tools: need root to install: ${need[*]}" >&2; exit 1; }
  sudo="sudo -n"
fi
echo "ensure-tools: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Postfix unconfigured: no system instance on :25 (tests run their own with postfix -c <dir>).
echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
# No system Dovecot (or other daemon) started by the install: invoke-rc.d and deb-systemd-invoke
# ask /usr/sbin/policy-rc.d, and 101 means "action forbidden". Ours only while installing, and
# only if the machine has none (Docker images ship one that already says 101).
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod 755 /usr/sbin/policy-rc.d
  trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
fi
$sudo apt-get -o DPkg::Lock::Timeout=300 update -qq
$sudo apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The package still enables dovecot.service for the next boot on systemd machines: the bench
# starts its own, so the system one stays off.
if [[ " ${need[*]} " == *" dovecot-"* ]] && command -v systemctl >/dev/null; then
  $sudo systemctl disable --quiet dovecot.service dovecot.socket 2>/dev/null || true
fi
if [[ " ${need[*]} " == *" rspamd "* ]] && command -v systemctl >/dev/null; then
  $sudo systemctl disable --quiet rspamd.service 2>/dev/null || true
fi
if [[ " ${need[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null; then
  $sudo systemctl disable --quiet prometheus.service 2>/dev/null || true
fi
# Only the services of packages installed here: a machine's own resolver stays as it was.
if [[ " ${need[*]} " == *" nsd "* ]] && command -v systemctl >/dev/null; then
  $sudo systemctl disable --quiet nsd.service 2>/dev/null || true
fi
if [[ " ${need[*]} " == *" unbound "* ]] && command -v systemctl >/dev/null; then
  $sudo systemctl disable --quiet unbound.service unbound-resolvconf.service 2>/dev/null || true
fi
bash "$(dirname "$0")/containers/ensure-containers-conf.sh"
