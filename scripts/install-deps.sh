#!/usr/bin/env bash
# System packages Ciel needs (Debian 12). Idempotent: skips apt when everything is present.
set -euo pipefail
pkgs=(clang-14 llvm-14 llvm-14-dev libllvm14 qemu-system-x86 qemu-utils busybox-static e2fsprogs ipvsadm xz-utils zstd iproute2 tmux fuse3 libxenforeignmemory1 libxenmisc4.17 libxen-dev libvirt-daemon-system libvirt-clients curl lz4 python3-drgn mmdebstrap prometheus)
# prometheus: only its binaries (prometheus, promtool) are used, by test/monitor/prometheus-server.test.ts; no service is needed
missing=()
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# /dev/kvm as Debian's udev rule leaves it (root:kvm 0660). This machine kind runs no udev, so the node stays
# root-only; libvirtd then finds KVM "enabled when probing but not available now" for its qemu user and
# re-probes QEMU on every call (a `virsh define` took 32 s instead of 0.05 s). Domains stay TCG either way.
if [ -c /dev/kvm ] && getent group kvm >/dev/null && [ "$(stat -c %G /dev/kvm)" != kvm ]; then
  $SUDO chgrp kvm /dev/kvm && $SUDO chmod 0660 /dev/kvm && echo "install-deps: /dev/kvm set to root:kvm 0660 (as udev would)"
fi
echo "install-deps: ok"
