#!/bin/sh
# Main process of one test container (already in its cgroup and its own network namespace).
# $1 = role name, $2 = index (subnet 10.77.<index>.0/24). The loads are known (see containers.ts LOAD).
name=$1
idx=$2
# busybox's ip (an applet, no exec) for everything but creating the veth, which init does with iproute2
i=0; while ! grep -q ' eth0:' /proc/net/dev && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done
busybox ip link set lo up
busybox ip addr add 10.77.$idx.2/24 dev eth0
busybox ip link set eth0 up
busybox ip route add default via 10.77.$idx.1
: > /run/ctr-up.$name
peer() { grep "^$1 " /etc/ciel/containers | cut -d' ' -f4; }

case "$name" in
  burner)
    while :; do :; done ;;
  memfill)
    dd if=/dev/zero of=/mnt/mem/fill bs=1M count=48 2>/dev/null
    # a 16 MiB dd buffer, filled and then held while dd blocks on a pipe nobody reads
    dd if=/dev/zero bs=16M count=1 2>/dev/null | sleep inf &
    exec sleep inf ;;
  disk)
    n=0
    while :; do
      dd if=/dev/zero of=/dev/vda bs=64k count=16 seek=$((n % 64 * 16)) oflag=direct 2>/dev/null
      dd if=/dev/vda of=/dev/null bs=64k count=16 skip=$((n % 64 * 16)) iflag=direct 2>/dev/null
      n=$((n + 1))
      sleep 1
    done ;;
  net)
    exec ping -q -i 0.2 -s 1000 10.77.$(peer netpeer).2 >/dev/null 2>&1 ;;
  *)
    exec sleep inf ;;
esac
