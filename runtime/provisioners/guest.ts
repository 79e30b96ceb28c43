// A minimal test guest for the provisioners: Debian's 6.1.0-56-amd64 kernel (direct kernel boot), a
// busybox-static initramfs whose init reads `ciel.container=<name>` from the kernel command line, puts
// itself in a cgroup v2 group of that name (the one "container"), prints `CIEL-READY <name>` on the
// serial console and idles (or burns `ciel.load=N` CPUs; with `ciel.ip=A/N` it brings up an e1000 NIC
// and serves HTTP on port 80), and a small qcow2 template disk. Everything is built once under
// cacheDir('provisioner-test').

import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync, chmodSync, copyFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { cacheDir } from '../cache.ts';
import { ToolError } from '../errors.ts';

export const GUEST_KERNEL_RELEASE = '6.1.0-56-amd64';

export interface TestGuest {
  kernel: string;
  initrd: string;
  /** qcow2 template disk */
  template: string;
  /**
   * The kernel command line for `container`; `ip` (CIDR, e.g. 10.77.0.2/24) brings up eth0 (an e1000
   * NIC the VM must have) and serves `<container> <ip>` over HTTP on port 80 (busybox httpd);
   * `load` busy-loops that many CPUs.
   */
  cmdline(container: string, o?: { ip?: string; load?: number }): string;
}

const INIT = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /run
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/busybox --install -s /bin
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
c=none
load=0
ip=
for w in $(cat /proc/cmdline); do
  case "$w" in
    ciel.container=*) c="\${w#ciel.container=}";;
    ciel.load=*) load="\${w#ciel.load=}";;
    ciel.ip=*) ip="\${w#ciel.ip=}";;
  esac
done
# the one container of this VM: a cgroup named after it, holding its process
if [ -d /sys/fs/cgroup ]; then
  mkdir -p "/sys/fs/cgroup/$c" && echo $$ > "/sys/fs/cgroup/$c/cgroup.procs"
fi
# ciel.ip=A/N: eth0 (e1000) up with that address, and the container's service: HTTP on port 80
if [ -n "$ip" ]; then
  insmod /lib/modules/e1000.ko
  ip link set lo up
  ip link set eth0 up && ip addr add "$ip" dev eth0
  mkdir -p /www && echo "$c \${ip%/*}" > /www/index.html
  httpd -p 80 -h /www
fi
# ciel.load=N: the container burns N CPUs (busy loops), for autoscaling demos
i=0
while [ "$i" -lt "$load" ]; do sh -c 'while :; do :; done' & i=$((i+1)); done
echo "CIEL-READY $c"
while :; do sleep 3600; done
`;

async function run(cmd: string, args: string[], opts: { cwd?: string } = {}): Promise<string> {
  try {
    const r = await execa(cmd, args, { cwd: opts.cwd });
    return r.stdout;
  } catch (err) {
    throw new ToolError(cmd, (err as Error).message);
  }
}

async function sh(script: string, cwd?: string): Promise<void> {
  await run('sh', ['-c', script], { cwd });
}

const E1000 = `./lib/modules/${GUEST_KERNEL_RELEASE}/kernel/drivers/net/ethernet/intel/e1000/e1000.ko`;

/**
 * Locate (or `apt-get download`) the kernel package and extract vmlinuz and the e1000 NIC module
 * (modules are not built in; e1000 has no module dependencies, unlike virtio_net).
 */
async function ensureKernel(dir: string): Promise<{ kernel: string; e1000: string }> {
  const kernel = join(dir, `vmlinuz-${GUEST_KERNEL_RELEASE}`);
  const e1000 = join(dir, `e1000-${GUEST_KERNEL_RELEASE}.ko`);
  if (existsSync(kernel) && existsSync(e1000)) return { kernel, e1000 };
  const debs = cacheDir('debs');
  const want = (f: string) => f.startsWith(`linux-image-${GUEST_KERNEL_RELEASE}-unsigned_`) && f.endsWith('.deb');
  let deb = readdirSync(debs).find(want);
  if (!deb) {
    await run('apt-get', ['download', `linux-image-${GUEST_KERNEL_RELEASE}-unsigned`], { cwd: debs });
    deb = readdirSync(debs).find(want);
    if (!deb) throw new ToolError('apt-get', `download of linux-image-${GUEST_KERNEL_RELEASE}-unsigned left no .deb in ${debs}`);
  }
  const x = join(dir, 'pkg');
  rmSync(x, { recursive: true, force: true });
  mkdirSync(x, { recursive: true });
  // dpkg-deb -x would also unpack ~400 MB of modules; take only what is needed from the data tarball
  const member = `./boot/vmlinuz-${GUEST_KERNEL_RELEASE}`;
  await sh(`dpkg-deb --fsys-tarfile '${join(debs, deb)}' | tar -x -C '${x}' '${member}' '${E1000}'`);
  renameSync(join(x, member), kernel);
  renameSync(join(x, E1000), e1000);
  rmSync(x, { recursive: true, force: true });
  return { kernel, e1000 };
}

async function ensureInitrd(dir: string, e1000: string): Promise<string> {
  const out = join(dir, 'initrd-busybox-v3.cpio.gz');
  if (existsSync(out)) return out;
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find(existsSync);
  if (!busybox) throw new ToolError('busybox', 'busybox-static is not installed (apt-get install -y busybox-static)');
  const root = join(dir, 'initrd-root');
  rmSync(root, { recursive: true, force: true });
  mkdirSync(join(root, 'bin'), { recursive: true });
  copyFileSync(busybox, join(root, 'bin', 'busybox'));
  chmodSync(join(root, 'bin', 'busybox'), 0o755);
  writeFileSync(join(root, 'init'), INIT, { mode: 0o755 });
  mkdirSync(join(root, 'lib', 'modules'), { recursive: true });
  copyFileSync(e1000, join(root, 'lib', 'modules', 'e1000.ko'));
  const tmp = `${out}.tmp`;
  await sh(`find . | '${busybox}' cpio -o -H newc 2>/dev/null | gzip -1 > '${tmp}'`, root);
  renameSync(tmp, out);
  rmSync(root, { recursive: true, force: true });
  return out;
}

async function ensureTemplate(dir: string): Promise<string> {
  const out = join(dir, 'template.qcow2');
  if (existsSync(out)) return out;
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', `${out}.tmp`, '64M']);
  renameSync(`${out}.tmp`, out);
  return out;
}

let cached: Promise<TestGuest> | undefined;

/** Build (once, cached on disk) the test guest's kernel, initramfs and template disk. */
export function ensureTestGuest(): Promise<TestGuest> {
  cached ??= (async () => {
    const dir = cacheDir('provisioner-test');
    const { kernel, e1000 } = await ensureKernel(dir);
    const initrd = await ensureInitrd(dir, e1000);
    const template = await ensureTemplate(dir);
    return {
      kernel,
      initrd,
      template,
      cmdline: (container: string, o: { ip?: string; load?: number } = {}) =>
        `console=ttyS0 quiet panic=-1 rdinit=/init ciel.container=${container}` +
        (o.ip ? ` ciel.ip=${o.ip}` : '') +
        (o.load ? ` ciel.load=${o.load}` : ''),
    };
  })();
  cached.catch(() => {
    cached = undefined;
  });
  return cached;
}
