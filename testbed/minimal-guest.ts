// A minimal test guest for the provisioners: Debian's 6.1.0-56-amd64 kernel (direct kernel boot) and a
// busybox-static initramfs (cpio written by testbed/guest/build.ts's cpioNewc, kernel modules resolved with
// their dependencies by resolveModules), plus a small qcow2 template disk holding an ext4 filesystem.
//
// What the guest's init does:
// - containers: `ciel.container=<name>` on the kernel command line names the one container this VM runs,
//   unless the disk says otherwise: `/etc/ciel/containers.enabled` on the ext4 disk (one name per line,
//   written offline before boot by provisioners/disk-edit.ts) lists the containers to start; the
//   template installs web, db and batch (`/etc/ciel/containers.installed`) and enables none of them. Each
//   container is a cgroup v2 group of its name holding its processes. `CIEL-CONTAINERS <names>` and
//   `CIEL-READY <name>` per container go to the serial console.
// - network: `ciel.ip=A/N` brings up eth0 (e1000) with that address and the first container serves
//   `<container> <ip>` over HTTP on port 80 (busybox httpd, one log line per request in
//   /tmp/httpd-<name>.log, so the backend counts what it served). `ciel.vip=V` makes it a direct-routing
//   (IPVS DR) real server: V on lo, arp_ignore=1, arp_announce=2. The disk may override both
//   (`/etc/ciel/net`: `ip=A/N`, `vip=V` lines): the container gets its address offline.
// - `ciel.load=N`: the first container burns N CPUs (busy loops).
// - `ciel.warm=1`: a warm-start template: modules loaded, eth0 up without an address, no container,
//   `CIEL-WARM-READY` on the console. Its memory is saved (QEMU migrate to a file) and clones are restored
//   from it; their identity (MAC, address, VIP, container) is then set over the control channel.
// - control channel: when the VM has a second UART (ttyS1; the QEMU-direct provisioner adds one backed by
//   a unix socket), /sbin/ciel-ctl reads `<id> <base64 shell script>` lines there, runs each script and
//   answers `@@B <id>`, the output, `@@E <id> <exit code>` (GuestChannel in qemu-direct.ts is the host side).
//   The LB VM (testbed/lb/ipvs-vm.ts) reuses the same loop.
//
// Everything is built once under cacheDir('provisioner-test').

import { existsSync, renameSync, writeFileSync, mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { execa } from 'execa';
import { cacheDir } from '../common/cache.ts';
import { ToolError } from '../common/errors.ts';
import { ensureKernel, Initramfs, initPreamble, resolveModules } from './guest-images.ts';
import type { VmSpec } from '../provisioners/provisioner.ts';

export const GUEST_KERNEL_RELEASE = '6.1.0-56-amd64';

/** Containers the template disk has "installed" (the paper's template with typical containers). */
export const TEMPLATE_CONTAINERS = ['web', 'db', 'batch'];

export interface GuestCmdlineOptions {
  /** CIDR for eth0, e.g. 10.77.0.2/24: the first container serves HTTP on port 80 */
  ip?: string;
  /** virtual IP of a direct-routing balancer: on lo, with arp_ignore=1 / arp_announce=2 */
  vip?: string;
  /** busy-loop this many CPUs in the first container */
  load?: number;
  /** warm-start template mode (no container, no address; identity set after restore) */
  warm?: boolean;
}

export interface TestGuest {
  kernel: string;
  initrd: string;
  /** qcow2 template disk (ext4 filesystem, no partition table) */
  template: string;
  /** the kernel command line for `container` (see the file comment) */
  cmdline(container: string, o?: GuestCmdlineOptions): string;
  /** a minimal VM for one container: 1 vCPU, 256 MiB, this kernel and initrd */
  spec(name: string, container: string, o?: { disk?: VmSpec['disk']; extraCmdline?: string }): VmSpec;
}

/** Modules of the test guest (dependencies are added): NIC, virtio disk, ext4 (crc32c for its checksums). */
export const TEST_GUEST_MODULES = ['e1000', 'virtio_pci', 'virtio_blk', 'crc32c_generic', 'ext4'];

/** The control-channel loop on ttyS1 (shared with the LB VM). */
export const CTL_SCRIPT = `#!/bin/sh
# ciel-ctl: run host commands arriving on the second UART; quiet when there is none
dev=/dev/ttyS1
grep -q '^1: uart:16550A' /proc/tty/driver/serial 2>/dev/null || exit 0
stty -F $dev raw -echo 115200 2>/dev/null
while :; do
  while IFS=' ' read -r id b64; do
    [ -n "$id" ] || continue
    echo "$b64" | base64 -d > /tmp/ctl.sh 2>/dev/null
    echo "@@B $id"
    sh /tmp/ctl.sh </dev/null 2>&1
    echo "@@E $id $?"
  done <$dev >$dev
  sleep 1
done
`;

/** Run a command in a container's cgroup: ciel-in NAME CMD... */
const IN_SCRIPT = `#!/bin/sh
n="$1"; shift
mkdir -p "/sys/fs/cgroup/$n" 2>/dev/null
echo $$ > "/sys/fs/cgroup/$n/cgroup.procs" 2>/dev/null
exec "$@"
`;

/** eth0 identity: ciel-net [-m MAC] IP/N [VIP] */
const NET_SCRIPT = `#!/bin/sh
# e1000 takes a new MAC while up (no carrier bounce); other NICs need the link down for it
if [ "$1" = -m ]; then
  ip link set eth0 address "$2" 2>/dev/null || { ip link set eth0 down; ip link set eth0 address "$2"; }
  shift 2
fi
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
  ip link set eth0 up
  if [ -n "$1" ]; then ip addr flush dev eth0; ip addr add "$1" dev eth0; fi
  # serving needs the carrier (e1000 reports it a moment after link up); a VM without a NIC does not wait
  i=0; while [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" != 1 ] && [ $i -lt 250 ]; do usleep 20000; i=$((i+1)); done
fi
if [ -n "$2" ]; then
  # direct-routing real server: accept packets for the VIP, never answer ARP for it
  for f in all eth0; do
    echo 1 > /proc/sys/net/ipv4/conf/$f/arp_ignore
    echo 2 > /proc/sys/net/ipv4/conf/$f/arp_announce
  done
  ip addr add "$2/32" dev lo 2>/dev/null
fi
echo "\${1%/*}" > /run/ciel-ip
exit 0
`;

/** Start a container: ciel-start NAME [LOAD] [http]. The http server answers "<name> <ip>". */
const START_SCRIPT = `#!/bin/sh
n="$1"; load="\${2:-0}"; http="$3"
mkdir -p "/sys/fs/cgroup/$n" 2>/dev/null
ciel-in "$n" sh -c 'while :; do sleep 3600; done' </dev/null >/dev/null 2>&1 &
i=0
while [ "$i" -lt "$load" ]; do ciel-in "$n" sh -c 'while :; do :; done' </dev/null >/dev/null 2>&1 & i=$((i+1)); done
if [ -n "$http" ]; then
  mkdir -p "/www/$n"
  echo "$n $(cat /run/ciel-ip 2>/dev/null)" > "/www/$n/index.html"
  ciel-in "$n" httpd -f -vv -p 80 -h "/www/$n" </dev/null >/dev/null 2>>"/tmp/httpd-$n.log" &
  # wait until it listens
  j=0; while [ $j -lt 50 ] && ! netstat -ltn 2>/dev/null | grep -q ':80 '; do usleep 20000; j=$((j+1)); done
fi
echo "$n" >> /run/ciel-containers
exit 0
`;

/** Requests served by a container: ciel-count NAME (busybox httpd -vv logs one "response:" line each). */
const COUNT_SCRIPT = `#!/bin/sh
n=$(grep -c 'response:' "/tmp/httpd-$1.log" 2>/dev/null)
echo "\${n:-0}"
`;

const INIT = `${initPreamble(['/mnt', '/www'])}mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
c=none; load=0; ip=; vip=; warm=
for w in $(cat /proc/cmdline); do
  case "$w" in
    ciel.container=*) c="\${w#ciel.container=}";;
    ciel.load=*) load="\${w#ciel.load=}";;
    ciel.ip=*) ip="\${w#ciel.ip=}";;
    ciel.vip=*) vip="\${w#ciel.vip=}";;
    ciel.warm=1) warm=1;;
  esac
done
# the disk, edited offline before boot, decides which containers start and may set the address
enabled="$c"
if [ -z "$warm" ] && [ -b /dev/vda ] && mount -t ext4 -o ro /dev/vda /mnt 2>/dev/null; then
  if [ -f /mnt/etc/ciel/containers.enabled ]; then enabled=$(grep -v '^#' /mnt/etc/ciel/containers.enabled | tr '\\n' ' '); fi
  if [ -f /mnt/etc/ciel/net ]; then
    v=$(sed -n 's/^ip=//p' /mnt/etc/ciel/net); [ -n "$v" ] && ip="$v"
    v=$(sed -n 's/^vip=//p' /mnt/etc/ciel/net); [ -n "$v" ] && vip="$v"
  fi
  umount /mnt
fi
ciel-ctl </dev/null >/dev/null 2>&1 &
if [ -n "$warm" ]; then
  ip link set lo up; ip link set eth0 up 2>/dev/null
  # save only a settled link: restored mid-negotiation, QEMU's e1000 comes back link-down for a while
  i=0; while [ -d /sys/class/net/eth0 ] && [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" != 1 ] && [ $i -lt 250 ]; do usleep 20000; i=$((i+1)); done
  echo "CIEL-WARM-READY"
else
  [ -n "$ip" ] && ciel-net "$ip" "$vip"
  first=1
  for n in $enabled; do
    if [ -n "$first" ]; then ciel-start "$n" "$load" \${ip:+http}; else ciel-start "$n" 0; fi
    first=
  done
  echo "CIEL-CONTAINERS $enabled"
  for n in $enabled; do echo "CIEL-READY $n"; done
fi
while :; do sleep 3600; done
`;

/**
 * A busybox initramfs skeleton: /bin/busybox with its applet links, /dev/console and /dev/null, the
 * given modules (paths relative to the kernel's modules dir, dependencies first) listed in
 * /etc/ciel/modules.order, /sbin/ciel-ctl, and `files` (path → [data, perm]). Returns cpio newc bytes.
 */
export function busyboxInitramfs(modulesDir: string, modules: string[], files: Record<string, [Buffer | string, number]>): Buffer {
  const fs = new Initramfs().busyboxBase(['lib/modules']).modules(modulesDir, modules).file('sbin/ciel-ctl', CTL_SCRIPT, 0o755);
  for (const [p, [data, perm]] of Object.entries(files)) fs.file(p, data, perm);
  return fs.toBuffer();
}

/** Write `data` to `out` via a temp file (concurrent builders never see a half-written file). */
function writeAtomic(out: string, data: Buffer): void {
  const tmp = `${out}.tmp-${process.pid}`;
  writeFileSync(tmp, data);
  renameSync(tmp, out);
}

function ensureInitrd(dir: string, modulesDir: string): string {
  const modules = resolveModules(modulesDir, TEST_GUEST_MODULES);
  const files: Record<string, [string, number]> = {
    init: [INIT, 0o755],
    'sbin/ciel-in': [IN_SCRIPT, 0o755],
    'sbin/ciel-net': [NET_SCRIPT, 0o755],
    'sbin/ciel-start': [START_SCRIPT, 0o755],
    'sbin/ciel-count': [COUNT_SCRIPT, 0o755],
  };
  const h = createHash('sha256');
  h.update(CTL_SCRIPT);
  for (const [k, [v]] of Object.entries(files)) h.update(`${k}\0${v}\0`);
  h.update(modules.join('\n'));
  const out = join(dir, `initrd-busybox-v5-${h.digest('hex').slice(0, 12)}.cpio`);
  if (existsSync(out)) return out;
  writeAtomic(out, busyboxInitramfs(modulesDir, modules, files));
  return out;
}

/** The template disk: a 64 MiB ext4 filesystem (whole disk) with the installed containers, as qcow2. */
async function ensureTemplate(dir: string): Promise<string> {
  const out = join(dir, 'template-ext4-v1.qcow2');
  if (existsSync(out)) return out;
  const tmp = mkdtempSync(join(dir, 'tpl-'));
  try {
    const root = join(tmp, 'root');
    mkdirSync(join(root, 'etc', 'ciel'), { recursive: true });
    writeFileSync(join(root, 'etc', 'ciel', 'containers.installed'), TEMPLATE_CONTAINERS.join('\n') + '\n');
    const raw = join(tmp, 'disk.raw');
    await run('mkfs.ext4', ['-q', '-F', '-L', 'ciel-tpl', '-d', root, raw, '64M']);
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, join(tmp, 'disk.qcow2')]);
    renameSync(join(tmp, 'disk.qcow2'), out);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return out;
}

async function run(cmd: string, args: string[]): Promise<string> {
  try {
    return (await execa(cmd, args)).stdout;
  } catch (err) {
    throw new ToolError(cmd, (err as Error).message);
  }
}

export function testGuestCmdline(container: string, o: GuestCmdlineOptions = {}): string {
  return (
    `console=ttyS0 quiet panic=-1 no_timer_check rdinit=/init ciel.container=${container}` +
    (o.ip ? ` ciel.ip=${o.ip}` : '') +
    (o.vip ? ` ciel.vip=${o.vip}` : '') +
    (o.load ? ` ciel.load=${o.load}` : '') +
    (o.warm ? ' ciel.warm=1 init_on_free=1' : '')
  );
}

let cached: Promise<TestGuest> | undefined;

/** Build (once, cached on disk) the test guest's kernel, initramfs and template disk. */
export function ensureTestGuest(): Promise<TestGuest> {
  cached ??= (async () => {
    const dir = cacheDir('provisioner-test');
    const k = ensureKernel();
    const initrd = ensureInitrd(dir, k.modulesDir);
    const template = await ensureTemplate(dir);
    return {
      kernel: k.vmlinuz,
      initrd,
      template,
      cmdline: testGuestCmdline,
      spec: (name, container, o = {}) => ({
        name,
        container,
        vcpus: 1,
        memMiB: 256,
        kernel: k.vmlinuz,
        initrd,
        cmdline: `${testGuestCmdline(container)}${o.extraCmdline ?? ''}`,
        disk: o.disk ?? 'overlay',
      }),
    };
  })();
  cached.catch(() => {
    cached = undefined;
  });
  return cached;
}
