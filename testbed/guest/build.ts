// Builds the test guest from Debian packages: the kernel (linux-image-6.1.0-56-amd64-unsigned) and an
// initramfs (cpio newc written here) with busybox-static, iproute2's `ip` (busybox's cannot make veths) with
// its shared libraries, the kernel modules the guest needs with their dependencies, and the init scripts.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cacheDir } from '../../common/cache.ts';
import { ToolError } from '../../common/errors.ts';
import { ensureKernel, Initramfs, KERNEL_RELEASE, resolveModules, run, type GuestKernel } from '../guest-images.ts';
export { cpioNewc, ensureImageDeb, ensureKernel, KERNEL_RELEASE, moduleDepends, resolveModules, type GuestKernel } from '../guest-images.ts';
import { GUEST_CONTAINERS, type Role } from './containers.ts';

/** Modules the guest loads; their dependencies are added from each .ko's modinfo `depends=`. */
export const GUEST_MODULES = ['veth', 'virtio_blk', 'virtio_pci', 'e1000', 'qemu_fw_cfg']; // e1000: an optional NIC on a test bridge; qemu_fw_cfg: tells QEMU's vmcoreinfo device where VMCOREINFO is, so dumps carry it (drgn needs that note)
const HERE = dirname(fileURLToPath(import.meta.url));
const BUILDER_VERSION = '2'; // bump when the initramfs layout changes (cache key)

// ---------- the initramfs ----------

function lddLibs(bin: string): string[] {
  const out = run('ldd', [bin]);
  const libs: string[] = [];
  for (const line of out.split('\n')) {
    const m = line.match(/=>\s+(\/\S+)/) ?? line.match(/^\s+(\/\S+)\s+\(/);
    if (m) libs.push(m[1]);
  }
  return libs;
}

export interface GuestImage {
  kernel: GuestKernel;
  initrd: string;
  /** cache key of the initramfs (changes with the scripts, the container list and the module list) */
  key: string;
  modules: string[];
  /** true when the initramfs was built now, false when it came from the cache */
  built: boolean;
}

/** The initramfs for `kernel` (default: Debian 6.1.0-56-amd64; other lines from guest/kernel.ts guestKernel()). */
export function buildGuest(log: (m: string) => void = () => {}, kernel: GuestKernel = ensureKernel(log)): GuestImage {
  const modules = resolveModules(kernel.modulesDir, GUEST_MODULES);
  const busybox = '/bin/busybox';
  if (!existsSync(busybox)) throw new ToolError('busybox', 'busybox-static is not installed (/bin/busybox)');
  const ipBin = ['/usr/sbin/ip', '/sbin/ip', '/bin/ip'].find((p) => existsSync(p));
  if (!ipBin) throw new ToolError('ip', 'iproute2 is not installed');
  const ipLibs = lddLibs(ipBin);

  const scripts = {
    init: readFileSync(join(HERE, 'init.sh')),
    ctr: readFileSync(join(HERE, 'ctr.sh')),
    truth: readFileSync(join(HERE, 'truth.awk')),
  };
  const containersTxt = GUEST_CONTAINERS.map((c) => `${c.name} ${c.id} ${c.cgroup} ${c.index}`).join('\n') + '\n';
  const modulesTxt = modules.join('\n') + '\n';

  const h = createHash('sha256');
  h.update(BUILDER_VERSION);
  for (const b of Object.values(scripts)) h.update(b);
  h.update(containersTxt);
  h.update(modulesTxt);
  h.update(kernel.release);
  for (const f of [busybox, ipBin, ...ipLibs]) {
    const st = statSync(f);
    h.update(`${f}:${st.size}:${st.mtimeMs}`);
  }
  const key = h.digest('hex').slice(0, 16);
  const dir = cacheDir('guest');
  const initrd = join(dir, `initrd-${key}.cpio`);
  if (existsSync(initrd)) return { kernel, initrd, key, modules, built: false };

  log(`building initramfs ${initrd} (${modules.length} modules: ${modules.map((m) => m.split('/').pop()).join(' ')})`);
  const fs = new Initramfs().busyboxBase(['lib64', 'root'], ['ip']).file('sbin/ip', readFileSync(ipBin), 0o755);
  for (const lib of ipLibs) {
    // keep the path the dynamic loader looks for (ld.so under /lib64, the rest under /lib/<triplet>)
    const dest = lib.startsWith('/lib64/') ? lib.slice(1) : `lib/x86_64-linux-gnu/${lib.split('/').pop()}`;
    fs.file(dest, readFileSync(lib), 0o755);
  }
  fs.modules(kernel.modulesDir, modules)
    .file('etc/ciel/containers', containersTxt)
    .file('etc/ciel/ctr.sh', scripts.ctr, 0o755)
    .file('etc/ciel/truth.awk', scripts.truth)
    .file('init', scripts.init, 0o755);
  const tmp = `${initrd}.tmp-${process.pid}`;
  writeFileSync(tmp, fs.toBuffer());
  renameSync(tmp, initrd);
  return { kernel, initrd, key, modules, built: true };
}

// ---------- the Docker disk ----------

/** What Docker's config.v2.json says about each standard container on the guest's second disk. */
export const DOCKER_DISK_INFO: Readonly<Record<Role, { name: string; image: string }>> = {
  burner: { name: 'web', image: 'nginx:1.25-alpine' },
  memfill: { name: 'cache', image: 'redis:7.2' },
  disk: { name: 'db', image: 'postgres:16-alpine' },
  net: { name: 'frontend', image: 'haproxy:2.8' },
  netpeer: { name: 'backend', image: 'httpd:2.4' },
  idle: { name: 'sidecar', image: 'busybox:1.36' },
};

/** Docker's Config.Labels of each standard container (what a compose project would set). */
export function dockerDiskLabels(role: Role): Record<string, string> {
  return { 'com.docker.compose.project': 'ciel-test', 'com.docker.compose.service': DOCKER_DISK_INFO[role].name };
}

/**
 * The limit fields of each standard container's hostconfig.json, as Docker writes them (0 = not set),
 * matching what the guest's init applies to the cgroup: burner runs under a CFS quota of 50000 us per
 * 100000 us (init.sh, LOAD.burnerCpuFraction), the others unlimited.
 */
export function dockerDiskHostConfig(role: Role): Record<string, number> {
  const cpu = role === 'burner' ? { CpuPeriod: 100_000, CpuQuota: 50_000 } : { CpuPeriod: 0, CpuQuota: 0 };
  return { Memory: 0, MemoryReservation: 0, MemorySwap: 0, CpuShares: 0, NanoCpus: 0, ...cpu };
}

/**
 * An ext4 image (made on the host with mkfs.ext4 -d, nothing mounted) holding
 * /var/lib/docker/containers/<id>/config.v2.json and hostconfig.json for the standard containers, plus
 * one stopped container that runs nowhere. The guest gets it as a read-only virtio disk; Ciel reads it from the host.
 */
export function makeDockerDisk(out: string, sizeMiB = 16): void {
  const root = mkdtempSync(join(tmpdir(), 'ciel-docker-root-'));
  try {
    const write = (id: string, name: string, image: string, running: boolean, labels: Record<string, string> = {}, host: object = {}) => {
      const d = join(root, 'var/lib/docker/containers', id);
      mkdirSync(d, { recursive: true });
      const cfg = { ID: id, Name: `/${name}`, Created: '2026-11-22T08:00:00Z', Config: { Image: image, Hostname: id.slice(0, 12), Labels: labels }, State: { Running: running } };
      writeFileSync(join(d, 'config.v2.json'), JSON.stringify(cfg));
      writeFileSync(join(d, 'hostconfig.json'), JSON.stringify(host));
    };
    for (const c of GUEST_CONTAINERS)
      write(c.id, DOCKER_DISK_INFO[c.name].name, DOCKER_DISK_INFO[c.name].image, true, dockerDiskLabels(c.name), dockerDiskHostConfig(c.name));
    write('5'.repeat(64), 'stopped-job', 'alpine:3.19', false);
    run('mkfs.ext4', ['-q', '-F', '-d', root, '-L', 'docker', out, `${sizeMiB}M`]);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

// `tsx testbed/guest/build.ts` builds (or finds) the guest and prints where it is.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const t = Date.now();
  const g = buildGuest((m) => console.error(`[guest-build] ${m}`));
  console.log(JSON.stringify({ ...g, ms: Date.now() - t }, null, 2));
}
