// Builds the test guest from Debian packages: the kernel (linux-image-6.1.0-56-amd64-unsigned) and an
// initramfs (cpio newc written here) with busybox-static, iproute2's `ip` (busybox's cannot make veths) with
// its shared libraries, the kernel modules the guest needs with their dependencies, and the init scripts.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import { cacheDir } from '../../runtime/cache.ts';
import { ToolError } from '../../runtime/errors.ts';
import { GUEST_CONTAINERS, type Role } from './containers.ts';

export const KERNEL_RELEASE = '6.1.0-56-amd64';
const IMAGE_PKG = `linux-image-${KERNEL_RELEASE}-unsigned`;
/** Modules the guest loads; their dependencies are added from each .ko's modinfo `depends=`. */
export const GUEST_MODULES = ['veth', 'virtio_blk', 'virtio_pci'];
const HERE = dirname(fileURLToPath(import.meta.url));
const BUILDER_VERSION = '1';

export interface GuestKernel {
  release: string;
  vmlinuz: string;
  /** extracted image package root (boot/, lib/modules/<release>/) */
  root: string;
  modulesDir: string;
}

function run(tool: string, args: string[], opts: { cwd?: string } = {}): string {
  try {
    return execFileSync(tool, args, { cwd: opts.cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new ToolError(tool, `${args.join(' ')}: ${(err.stderr || err.message).trim()}`);
  }
}

/** The image .deb in cacheDir('debs'), fetched with `apt-get download` when missing. */
export function ensureImageDeb(log: (m: string) => void = () => {}): string {
  const debs = cacheDir('debs');
  const find = () => readdirSync(debs).find((f) => f.startsWith(`${IMAGE_PKG}_`) && f.endsWith('.deb'));
  let f = find();
  if (!f) {
    log(`fetching ${IMAGE_PKG} with apt-get download into ${debs}`);
    try {
      run('apt-get', ['download', IMAGE_PKG], { cwd: debs });
    } catch {
      // a fresh machine may have no package lists yet
      log('apt-get download failed; running apt-get update and retrying');
      run('apt-get', ['update', '-qq']);
      run('apt-get', ['download', IMAGE_PKG], { cwd: debs });
    }
    f = find();
    if (!f) throw new ToolError('apt-get', `download of ${IMAGE_PKG} left no .deb in ${debs}`);
  }
  return join(debs, f);
}

/** The guest kernel, extracted from the image package into cacheDir('kernels', release) once. */
export function ensureKernel(log: (m: string) => void = () => {}): GuestKernel {
  const root = cacheDir('kernels', KERNEL_RELEASE);
  const vmlinuz = join(root, 'boot', `vmlinuz-${KERNEL_RELEASE}`);
  const modulesDir = join(root, 'lib', 'modules', KERNEL_RELEASE);
  const stamp = join(root, '.extracted');
  if (!existsSync(stamp) || !existsSync(vmlinuz)) {
    const deb = ensureImageDeb(log);
    log(`extracting ${deb} into ${root}`);
    // extract beside, then move into place: a concurrent builder never sees a half-extracted tree
    const tmp = `${root}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    run('dpkg-deb', ['-x', deb, tmp]);
    for (const e of readdirSync(tmp)) {
      if (!existsSync(join(root, e))) renameSync(join(tmp, e), join(root, e));
    }
    rmSync(tmp, { recursive: true, force: true });
    writeFileSync(stamp, `${deb}\n`);
  }
  return { release: KERNEL_RELEASE, vmlinuz, root, modulesDir };
}

// ---------- kernel modules ----------

function indexModules(modulesDir: string): Map<string, string> {
  const map = new Map<string, string>();
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ko')) map.set(e.name.slice(0, -3).replace(/-/g, '_'), p);
    }
  };
  walk(join(modulesDir, 'kernel'));
  return map;
}

/** `depends=` from the .modinfo strings of a .ko (NUL-separated key=value strings). */
export function moduleDepends(ko: Buffer): string[] {
  const key = Buffer.from('\0depends=');
  const i = ko.indexOf(key);
  if (i < 0) return [];
  const start = i + key.length;
  const end = ko.indexOf(0, start);
  const v = ko.subarray(start, end).toString('latin1');
  return v ? v.split(',').map((s) => s.trim().replace(/-/g, '_')).filter(Boolean) : [];
}

/** Modules with all their dependencies, dependencies first. Returns paths relative to modulesDir. */
export function resolveModules(modulesDir: string, wanted: string[]): string[] {
  const index = indexModules(modulesDir);
  const order: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (name: string, chain: string[]) => {
    const st = state.get(name);
    if (st === 'done') return;
    if (st === 'visiting') throw new Error(`module dependency cycle: ${[...chain, name].join(' -> ')}`);
    const p = index.get(name);
    if (!p) throw new ToolError('modules', `module ${name} not found under ${modulesDir} (needed by ${chain.join(' -> ') || 'guest'})`);
    state.set(name, 'visiting');
    for (const d of moduleDepends(readFileSync(p))) visit(d, [...chain, name]);
    state.set(name, 'done');
    order.push(p.slice(modulesDir.length + 1));
  };
  for (const w of wanted) visit(w.replace(/-/g, '_'), []);
  return order;
}

// ---------- cpio newc ----------

interface Entry {
  name: string; // no leading slash
  mode: number; // full st_mode
  data?: Buffer;
  rdev?: [number, number];
}

const S_IFDIR = 0o040000, S_IFREG = 0o100000, S_IFLNK = 0o120000, S_IFCHR = 0o020000;

/** Write a cpio "newc" archive (what the kernel's initramfs unpacker reads). */
export function cpioNewc(entries: Entry[]): Buffer {
  const parts: Buffer[] = [];
  let off = 0;
  const push = (b: Buffer) => {
    parts.push(b);
    off += b.length;
  };
  const pad = () => {
    const r = off % 4;
    if (r) push(Buffer.alloc(4 - r));
  };
  const hex = (v: number) => v.toString(16).padStart(8, '0');
  let ino = 1;
  const one = (e: Entry) => {
    const name = Buffer.from(`${e.name}\0`, 'utf8');
    const data = e.data ?? Buffer.alloc(0);
    const fields = [
      ino++, e.mode, 0, 0, (e.mode & S_IFDIR) === S_IFDIR ? 2 : 1, 0, data.length,
      0, 0, e.rdev?.[0] ?? 0, e.rdev?.[1] ?? 0, name.length, 0,
    ];
    push(Buffer.from(`070701${fields.map(hex).join('')}`, 'ascii'));
    push(name);
    pad();
    push(data);
    pad();
  };
  for (const e of entries) one(e);
  one({ name: 'TRAILER!!!', mode: 0 });
  return Buffer.concat(parts);
}

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

export function buildGuest(log: (m: string) => void = () => {}): GuestImage {
  const kernel = ensureKernel(log);
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
  h.update(KERNEL_RELEASE);
  for (const f of [busybox, ipBin, ...ipLibs]) {
    const st = statSync(f);
    h.update(`${f}:${st.size}:${st.mtimeMs}`);
  }
  const key = h.digest('hex').slice(0, 16);
  const dir = cacheDir('guest');
  const initrd = join(dir, `initrd-${key}.cpio`);
  if (existsSync(initrd)) return { kernel, initrd, key, modules, built: false };

  log(`building initramfs ${initrd} (${modules.length} modules: ${modules.map((m) => m.split('/').pop()).join(' ')})`);
  const entries: Entry[] = [];
  const dirs = new Set<string>();
  const mkdirs = (p: string) => {
    const parts = p.split('/');
    for (let i = 1; i <= parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (d && !dirs.has(d)) {
        dirs.add(d);
        entries.push({ name: d, mode: S_IFDIR | 0o755 });
      }
    }
  };
  const file = (p: string, data: Buffer, perm = 0o644) => {
    mkdirs(dirname(p));
    entries.push({ name: p, mode: S_IFREG | perm, data });
  };
  for (const d of ['bin', 'sbin', 'dev', 'proc', 'sys', 'run', 'tmp', 'mnt', 'etc/ciel', 'lib64', 'root']) mkdirs(d);
  entries.push({ name: 'dev/console', mode: S_IFCHR | 0o600, rdev: [5, 1] });
  entries.push({ name: 'dev/null', mode: S_IFCHR | 0o666, rdev: [1, 3] });
  file('bin/busybox', readFileSync(busybox), 0o755);
  const applets = run(busybox, ['--list']).split('\n').filter((a) => a && a !== 'busybox' && a !== 'ip');
  for (const a of applets) entries.push({ name: `bin/${a}`, mode: S_IFLNK | 0o777, data: Buffer.from('busybox') });
  file('sbin/ip', readFileSync(ipBin), 0o755);
  for (const lib of ipLibs) {
    // keep the path the dynamic loader looks for (ld.so under /lib64, the rest under /lib/<triplet>)
    const dest = lib.startsWith('/lib64/') ? lib.slice(1) : `lib/x86_64-linux-gnu/${lib.split('/').pop()}`;
    file(dest, readFileSync(lib), 0o755);
  }
  for (const m of modules) file(`lib/modules/${m}`, readFileSync(join(kernel.modulesDir, m)));
  file('etc/ciel/modules.order', Buffer.from(modulesTxt));
  file('etc/ciel/containers', Buffer.from(containersTxt));
  file('etc/ciel/ctr.sh', scripts.ctr, 0o755);
  file('etc/ciel/truth.awk', scripts.truth);
  file('init', scripts.init, 0o755);
  const tmp = `${initrd}.tmp-${process.pid}`;
  writeFileSync(tmp, cpioNewc(entries));
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

/**
 * An ext4 image (made on the host with mkfs.ext4 -d, nothing mounted) holding
 * /var/lib/docker/containers/<id>/config.v2.json for the standard containers, plus one stopped
 * container that runs nowhere. The guest gets it as a read-only virtio disk; Ciel reads it from the host.
 */
export function makeDockerDisk(out: string, sizeMiB = 16): void {
  const root = mkdtempSync(join(tmpdir(), 'ciel-docker-root-'));
  try {
    const write = (id: string, name: string, image: string, running: boolean) => {
      const d = join(root, 'var/lib/docker/containers', id);
      mkdirSync(d, { recursive: true });
      const cfg = { ID: id, Name: `/${name}`, Created: '2026-11-22T08:00:00Z', Config: { Image: image, Hostname: id.slice(0, 12) }, State: { Running: running } };
      writeFileSync(join(d, 'config.v2.json'), JSON.stringify(cfg));
      writeFileSync(join(d, 'hostconfig.json'), '{}');
    };
    for (const c of GUEST_CONTAINERS) write(c.id, DOCKER_DISK_INFO[c.name].name, DOCKER_DISK_INFO[c.name].image, true);
    write('5'.repeat(64), 'stopped-job', 'alpine:3.19', false);
    run('mkfs.ext4', ['-q', '-F', '-d', root, '-L', 'docker', out, `${sizeMiB}M`]);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

// `tsx test/guest/build.ts` builds (or finds) the guest and prints where it is.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const t = Date.now();
  const g = buildGuest((m) => console.error(`[guest-build] ${m}`));
  console.log(JSON.stringify({ ...g, ms: Date.now() - t }, null, 2));
}
