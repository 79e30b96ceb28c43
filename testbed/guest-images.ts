// Building blocks for the small Linux guests Ciel boots itself (test guests, the load-balancer VM, the
// minimal per-container VMs): Debian's kernel image package, kernel-module dependency resolution, and a
// cpio "newc" writer for initramfs images.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cacheDir } from '../common/cache.ts';
import { ToolError } from '../common/errors.ts';

export const KERNEL_RELEASE = '6.1.0-56-amd64';
const IMAGE_PKG = `linux-image-${KERNEL_RELEASE}-unsigned`;

export interface GuestKernel {
  release: string;
  vmlinuz: string;
  /** extracted image package root (boot/, lib/modules/<release>/) */
  root: string;
  modulesDir: string;
}

/** Run a tool synchronously; failures become ToolError with its stderr. */
export function run(tool: string, args: string[], opts: { cwd?: string } = {}): string {
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
      else if (e.name.endsWith('.ko.xz')) map.set(e.name.slice(0, -6).replace(/-/g, '_'), p);
    }
  };
  walk(join(modulesDir, 'kernel'));
  return map;
}

/** A module's bytes; 6.12 and 7.x ship them xz-compressed (.ko.xz), which busybox insmod may not read. */
export function readModule(path: string): Buffer {
  if (!path.endsWith('.xz')) return readFileSync(path);
  return execFileSync('xz', ['-dc', path], { maxBuffer: 256 * 1024 * 1024 });
}

/** Names of the modules built into the kernel (modules.builtin), which need no insmod. */
function builtinModules(modulesDir: string): Set<string> {
  const f = join(modulesDir, 'modules.builtin');
  if (!existsSync(f)) return new Set();
  return new Set(readFileSync(f, 'utf8').split('\n').filter(Boolean).map((l) => l.split('/').pop()!.replace(/\.ko$/, '').replace(/-/g, '_')));
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
  const builtin = builtinModules(modulesDir);
  const order: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (name: string, chain: string[]) => {
    const st = state.get(name);
    if (st === 'done') return;
    if (st === 'visiting') throw new Error(`module dependency cycle: ${[...chain, name].join(' -> ')}`);
    const p = index.get(name);
    if (!p && builtin.has(name)) return;
    if (!p) throw new ToolError('modules', `module ${name} not found under ${modulesDir} (needed by ${chain.join(' -> ') || 'guest'})`);
    state.set(name, 'visiting');
    for (const d of moduleDepends(readModule(p))) visit(d, [...chain, name]);
    state.set(name, 'done');
    order.push(p.slice(modulesDir.length + 1));
  };
  for (const w of wanted) visit(w.replace(/-/g, '_'), []);
  return order;
}

// ---------- cpio newc ----------

export interface CpioEntry {
  name: string; // no leading slash
  mode: number; // full st_mode
  data?: Buffer;
  rdev?: [number, number];
}

const S_IFDIR = 0o040000, S_IFREG = 0o100000, S_IFLNK = 0o120000, S_IFCHR = 0o020000;

/** Write a cpio "newc" archive (what the kernel's initramfs unpacker reads). */
export function cpioNewc(entries: CpioEntry[]): Buffer {
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
  const one = (e: CpioEntry) => {
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

/**
 * The first lines of a busybox /init (the minimal per-container VMs and the load-balancer VM): mount
 * points (plus `extraDirs`), /proc, /sys, /dev, the applet links, PATH, a tmpfs /tmp, and the kernel
 * modules written by Initramfs.modules() loaded in dependency order.
 */
export function initPreamble(extraDirs: string[] = []): string {
  return `#!/bin/busybox sh
/bin/busybox mkdir -p ${['/proc', '/sys', '/dev', '/tmp', '/run', ...extraDirs].join(' ')}
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
/bin/busybox --install -s /bin
export PATH=/sbin:/bin
mount -t tmpfs tmpfs /tmp
for m in $(cat /etc/ciel/modules.order); do insmod "/lib/modules/$m" 2>/dev/null; done
`;
}

/** An initramfs being assembled; parent directories are created as entries are added. */
export class Initramfs {
  private readonly entries: CpioEntry[] = [];
  private readonly dirs = new Set<string>();

  dir(path: string): this {
    const parts = path.split('/');
    for (let i = 1; i <= parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (d && d !== '.' && !this.dirs.has(d)) {
        this.dirs.add(d);
        this.entries.push({ name: d, mode: S_IFDIR | 0o755 });
      }
    }
    return this;
  }

  file(path: string, data: Buffer | string, perm = 0o644): this {
    const p = path.replace(/^\//, '');
    this.dir(p.split('/').slice(0, -1).join('/'));
    this.entries.push({ name: p, mode: S_IFREG | perm, data: Buffer.isBuffer(data) ? data : Buffer.from(data) });
    return this;
  }

  symlink(path: string, target: string): this {
    this.entries.push({ name: path, mode: S_IFLNK | 0o777, data: Buffer.from(target) });
    return this;
  }

  /**
   * busybox-static with one symlink per applet (except `skipApplets`), /dev/console and /dev/null,
   * and the usual mount points plus `extraDirs`.
   */
  busyboxBase(extraDirs: string[] = [], skipApplets: string[] = []): this {
    const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p));
    if (!busybox) throw new ToolError('busybox', 'busybox-static is not installed (apt-get install -y busybox-static)');
    for (const d of ['bin', 'sbin', 'dev', 'proc', 'sys', 'run', 'tmp', 'mnt', 'etc/ciel', ...extraDirs]) this.dir(d);
    this.entries.push({ name: 'dev/console', mode: S_IFCHR | 0o600, rdev: [5, 1] });
    this.entries.push({ name: 'dev/null', mode: S_IFCHR | 0o666, rdev: [1, 3] });
    this.file('bin/busybox', readFileSync(busybox), 0o755);
    const skip = new Set(['busybox', ...skipApplets]);
    for (const a of run(busybox, ['--list']).split('\n')) if (a && !skip.has(a)) this.symlink(`bin/${a}`, 'busybox');
    return this;
  }

  /** Kernel modules (paths relative to modulesDir, dependencies first) and /etc/ciel/modules.order. */
  modules(modulesDir: string, modules: string[]): this {
    const names = modules.map((m) => m.replace(/\.xz$/, ''));
    modules.forEach((m, i) => this.file(`lib/modules/${names[i]}`, readModule(join(modulesDir, m))));
    return this.file('etc/ciel/modules.order', names.join('\n') + '\n');
  }

  toBuffer(): Buffer {
    return cpioNewc(this.entries);
  }
}
