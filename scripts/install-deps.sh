#!/usr/bin/env bash
# System packages Ciel needs (Debian 12). Idempotent: skips apt when everything is present.
set -euo pipefail
pkgs=(clang-14 llvm-14 llvm-14-dev libllvm14 qemu-system-x86 qemu-utils busybox-static e2fsprogs ipvsadm xz-utils zstd iproute2 tmux fuse3 libxenforeignmemory1 libxenmisc4.17 libxen-dev libvirt-daemon-system libvirt-clients curl lz4 mmdebstrap)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "install-deps: ok"
