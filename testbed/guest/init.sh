#!/bin/sh
# PID 1 of the Ciel test guest (busybox ash). Sets up cgroups (v2 by default, v1 with ciel.cgroup=v1 on the
# kernel command line), starts containers laid out as Docker does, each in its own network namespace with a
# veth pair, puts a known load in each, then answers ground-truth requests on the second serial port (ttyS1).
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run /tmp /mnt/mem
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t tmpfs -o size=128m tmpfs /mnt/mem

log() { echo "ciel-init: $*"; }
MODE=cgroup2
case " $(cat /proc/cmdline) " in *" ciel.cgroup=v1 "*) MODE=cgroup1 ;; esac
log "mode $MODE, uptime $(cut -d' ' -f1 /proc/uptime)"

# Kernel modules, in dependency order (written by the builder).
while read -r m; do
  [ -n "$m" ] && insmod "/lib/modules/$m" || log "insmod $m failed"
done < /etc/ciel/modules.order

CG=/sys/fs/cgroup
if [ "$MODE" = cgroup2 ]; then
  mount -t cgroup2 cgroup2 $CG
  echo "+cpu +memory +io +pids" > $CG/cgroup.subtree_control
  for p in docker system.slice; do
    mkdir -p $CG/$p
    echo "+cpu +memory +io +pids" > $CG/$p/cgroup.subtree_control
  done
  HIERS="."
else
  mount -t tmpfs cgroup_root $CG
  for h in cpu,cpuacct memory blkio pids; do
    mkdir -p $CG/$h
    mount -t cgroup -o $h cgroup $CG/$h
  done
  ln -s cpu,cpuacct $CG/cpu
  ln -s cpu,cpuacct $CG/cpuacct
  HIERS="cpu,cpuacct memory blkio pids"
fi

echo 1 > /proc/sys/net/ipv4/ip_forward
busybox ip link set lo up
: > /run/ctrs

# Wait until the disk shows up (virtio_blk probes asynchronously).
i=0; while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
[ -b /dev/vda ] || log "no /dev/vda"
VDA=$(cat /sys/block/vda/dev 2>/dev/null)

ROOTNS=$(readlink /proc/1/ns/net)
CTRS=/etc/ciel/containers
case " $(cat /proc/cmdline) " in *" ciel.bare "*) CTRS=/dev/null; log "bare: no standard containers" ;; esac
# containers list: name id cgroup-path index
while read -r name id cgpath idx; do
  [ -z "$name" ] && continue
  for h in $HIERS; do mkdir -p "$CG/$h$cgpath"; done
  if [ "$MODE" = cgroup1 ] && [ -n "$VDA" ]; then
    # Linux 6.1 counts blkio.throttle.io_service_bytes only for groups with a throttle rule: set one that
    # never throttles (1 TiB/s) so v1 block-I/O bytes are accounted, as a monitored v1 host would configure.
    echo "$VDA 1099511627776" > "$CG/blkio$cgpath/blkio.throttle.read_bps_device"
    echo "$VDA 1099511627776" > "$CG/blkio$cgpath/blkio.throttle.write_bps_device"
  fi
  if [ "$name" = burner ]; then
    if [ "$MODE" = cgroup2 ]; then echo "50000 100000" > "$CG$cgpath/cpu.max"
    else echo 100000 > "$CG/cpu,cpuacct$cgpath/cpu.cfs_period_us"; echo 50000 > "$CG/cpu,cpuacct$cgpath/cpu.cfs_quota_us"; fi
  fi
  # The child joins the cgroup(s), then becomes the container's main process in a new netns (same pid).
  HIERS="$HIERS" CG="$CG" CGPATH="$cgpath" sh -c '
    for h in $HIERS; do echo $$ > "$CG/$h$CGPATH/cgroup.procs"; done
    exec unshare -n /bin/sh /etc/ciel/ctr.sh "$0" "$1"' "$name" "$idx" </dev/null >/dev/console 2>&1 &
  pid=$!
  i=0; while [ "$(readlink /proc/$pid/ns/net)" = "$ROOTNS" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
  /sbin/ip link add h$idx type veth peer name eth0 netns $pid
  busybox ip addr add 10.77.$idx.1/24 dev h$idx
  busybox ip link set h$idx up
  echo "$name $id $cgpath $pid" >> /run/ctrs
done < $CTRS

# wait until every container has configured its eth0 (and so started its load)
while read -r name rest; do
  i=0; while [ ! -e /run/ctr-up.$name ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
  [ -e /run/ctr-up.$name ] || log "container $name did not come up"
done < $CTRS

# The ground-truth channel: requests "truth <seq>" / "ping <seq>" / "sh <seq> <cmd>" on ttyS1, framed answers
# on ttyS1. The port is opened before READY: bytes that reach a UART nobody has open are dropped.
exec 3<>/dev/ttyS1
stty raw -echo <&3
log "containers up, uptime $(cut -d' ' -f1 /proc/uptime)"
echo "CIEL-READY mode=$MODE uptime=$(cut -d' ' -f1 /proc/uptime)"
while :; do
  while read -r cmd arg <&3; do
    case "$cmd" in
      truth) awk -v seq="$arg" -v mode="$MODE" -f /etc/ciel/truth.awk /run/ctrs >&3 ;;
      ping) echo "CIEL-PONG $arg" >&3 ;;
      sh) # "sh <seq> <command>": run a shell command, output framed by CIEL-SH-END <seq> <status>
        s=${arg%% *}; c=${arg#* }; sh -c "$c" >&3 2>&1 </dev/null; echo "CIEL-SH-END $s $?" >&3 ;;
      "") ;;
      *) echo "CIEL-ERROR unknown command $cmd" >&3 ;;
    esac
  done
  sleep 1
done
