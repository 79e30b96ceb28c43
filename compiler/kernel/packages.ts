// Fetch a Debian guest kernel's headers, image and System.map into the cache.
//
//   cacheDir('debs')              the .deb files, as `apt-get download` names them (shared by releases)
//   cacheDir('kernels', RELEASE)  one folder with the packages merged:
//       usr/src/linux-headers-<abi>-common[-rt]   K (the headers)
//       usr/src/linux-headers-<release>           O (generated headers, .config)
//       boot/vmlinuz-<release>, boot/config-<release>, lib/modules/<release>/   (the image package)
//       System.map                                (only this one file from the -dbg package)
//       .ciel/                                     stamps and the lock
//
// Only missing .debs are downloaded; every extraction leaves a stamp so a warm fetch is a few stats.

import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { execa } from 'execa';
import { cacheDir } from '../../common/cache.ts';
import { BadInputError, ToolError } from '../../common/errors.ts';
import { extractDebMembers, extractRemoteDebMembers } from './deb.ts';
import { progressReporter, type LogFn, type ProgressFn } from './progress.ts';
import { ARCHIVE_SUITES, privateApt, SECURITY_SUITES } from './apt.ts';
import { parseRelease, type Flavour, type KernelLine, type KernelRelease } from './release.ts';

export interface HeaderTree {
  release: string;
  /** the Debian kernel line; undefined for a --kernel-dir tree whose release is not a Debian one */
  line?: KernelLine;
  /** `custom` for a tree given with --kernel-dir whose release is not a Debian one */
  flavour: Flavour | 'custom';
  /** e.g. `6.1.0-56` */
  abi: string;
  /** the folder everything was extracted to (or the --kernel-dir) */
  dir: string;
  /** where derived files (decompressed vmlinux, ...) are cached for this kernel */
  workDir: string;
  /** K: the -common headers tree */
  commonDir: string;
  /** O: the flavour's generated headers (equal to K for a build tree) */
  archDir: string;
  /** the kernel .config */
  config: string;
  /** package name -> Debian version of every package used (empty for --kernel-dir) */
  packageVersions: Record<string, string>;
}

export interface KernelTree extends HeaderTree {
  /** bzImage (carries .BTF inside its compressed vmlinux); absent when only the headers' BTF vmlinux was fetched */
  vmlinuz?: string;
  /** an uncompressed vmlinux when one is at hand (build tree, or the BTF-only one of the 6.12/7.x headers); btf.ts caches one under workDir otherwise */
  vmlinux?: string;
  systemMap: string;
  /** `lib/modules/<release>` (modules.dep, kernel/**.ko) when the tree has the modules */
  modulesDir?: string;
  /** package name -> cached .deb file (e.g. to copy modules out of the image package) */
  debs: Record<string, string>;
}

export interface FetchOptions {
  /** progress of downloads and extractions (bytes) */
  onProgress?: ProgressFn;
  /** one line per step (what is downloaded / extracted, and how long it took) */
  log?: LogFn;
  /** draw progress on stderr; default: when no onProgress callback was given */
  progressOnStderr?: boolean;
  /** refresh the private apt lists (once per process) when they lack a package; default true */
  aptUpdate?: boolean;
}

// ---------------------------------------------------------------------------------------------
// apt (a private state in the cache: compiler/kernel/apt.ts)

interface AptInfo {
  version: string;
  size: number;
  uri: string;
}

/** Make sure the private lists exist; later, refresh them once per process when a package is unknown. */
async function aptInfo(pkg: string, opts: FetchOptions, log: LogFn): Promise<AptInfo | undefined> {
  const apt = privateApt();
  if (apt.empty) {
    if (opts.aptUpdate === false) return undefined;
    await apt.update(log, 'first use: listing the Debian suites that carry kernels');
  }
  return apt.info(pkg);
}

/** Releases of the same flavour that apt knows, nearest to the one asked for first. */
export async function nearestReleases(rel: KernelRelease, max = 6): Promise<string[]> {
  const apt = privateApt();
  if (apt.empty) return [];
  const [major, minor] = rel.upstream.split('.');
  const prefix = rel.line === '7.x' ? `linux-headers-${major}.` : `linux-headers-${major}.${minor}.`;
  const key = (r: KernelRelease): number => {
    const [a, b, c] = r.upstream.split('.').map(Number) as [number, number, number];
    return a * 1e9 + b * 1e6 + (r.line === '6.1' || r.line === '5.10' ? r.abiNumber : c) * 100 + Number(/deb(\d+)/.exec(r.abi)?.[1] ?? 0);
  };
  const want = key(rel);
  const found = new Map<string, number>();
  for (const name of await apt.namesStartingWith(prefix)) {
    try {
      const r = parseRelease(name.slice('linux-headers-'.length));
      if (r.flavour === rel.flavour && r.release !== rel.release) found.set(r.release, key(r));
    } catch {
      /* -common, meta packages */
    }
  }
  return [...found.entries()]
    .sort((a, b) => Math.abs(a[1] - want) - Math.abs(b[1] - want))
    .slice(0, max)
    .sort((a, b) => a[1] - b[1])
    .map(([r]) => r);
}

/** Debian version from a .deb file name (`pkg_1%3a2.3-4_amd64.deb`). */
function versionFromDebName(file: string): string {
  const parts = file.replace(/\.deb$/, '').split('_');
  return decodeURIComponent(parts[1] ?? '');
}

/** The cached .deb of a package (newest by mtime when there are several versions), or undefined. */
export function cachedDeb(pkg: string, debsDir = cacheDir('debs')): string | undefined {
  const prefix = `${pkg}_`;
  const hits = readdirSync(debsDir)
    .filter((f) => f.startsWith(prefix) && f.endsWith('.deb') && f.slice(prefix.length).split('_').length === 2)
    .map((f) => join(debsDir, f));
  if (hits.length === 0) return undefined;
  hits.sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  return hits[0];
}

/** Download one package into debsDir (via a private temp folder so the cache only ever holds complete files). */
async function aptDownload(pkg: string, info: AptInfo, debsDir: string, opts: FetchOptions, log: LogFn): Promise<string> {
  const tmp = join(debsDir, `.download-${process.pid}-${pkg}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  const rep = progressReporter(`download ${pkg}`, {
    onProgress: opts.onProgress,
    toStderr: opts.progressOnStderr ?? !opts.onProgress,
  });
  const t0 = performance.now();
  const poll = setInterval(() => {
    let done = 0;
    for (const f of readdirSync(tmp)) {
      try {
        done += statSync(join(tmp, f)).size;
      } catch {
        /* renamed meanwhile */
      }
    }
    rep.update(done, info.size);
  }, 250);
  let r;
  try {
    r = await privateApt().run('apt-get', ['download', `${pkg}=${info.version}`], tmp);
  } finally {
    clearInterval(poll);
  }
  const files = readdirSync(tmp).filter((f) => f.endsWith('.deb'));
  if (r.exitCode !== 0 || files.length !== 1) {
    rmSync(tmp, { recursive: true, force: true });
    rep.finish();
    throw new ToolError('apt-get', `apt-get download ${pkg}=${info.version} failed (exit ${r.exitCode}): ${r.stderr.trim().slice(-2000)}`);
  }
  const dest = join(debsDir, files[0]!);
  renameSync(join(tmp, files[0]!), dest);
  rmSync(tmp, { recursive: true, force: true });
  const secs = (performance.now() - t0) / 1000;
  rep.update(info.size, info.size);
  rep.finish(`${(info.size / 1048576).toFixed(1)} MiB in ${secs.toFixed(1)} s`);
  log(`downloaded ${files[0]} (${(info.size / 1048576).toFixed(1)} MiB) in ${secs.toFixed(1)} s`);
  return dest;
}

/**
 * The first of `candidates` that is cached or known to apt: {pkg, deb} for a cached .deb, else the
 * apt info. Refreshes the private lists once per process when none is known. Throws BadInputError
 * naming the package(s), the release and the nearest releases that exist when apt does not have it.
 */
async function findPackage(candidates: string[], rel: KernelRelease, what: string, opts: FetchOptions, log: LogFn): Promise<{ pkg: string; deb?: string; info?: AptInfo }> {
  const debsDir = cacheDir('debs');
  for (const pkg of candidates) {
    const hit = cachedDeb(pkg, debsDir);
    if (hit) return { pkg, deb: hit };
  }
  const apt = privateApt();
  for (let attempt = 0; attempt < 2; attempt++) {
    for (const pkg of candidates) {
      const info = await aptInfo(pkg, opts, log);
      if (info) return { pkg, info };
    }
    if (attempt === 0 && !apt.updated && !apt.empty && opts.aptUpdate !== false) await apt.update(log, `${candidates[0]} is not in the lists`);
    else break;
  }
  const near = await nearestReleases(rel);
  throw new BadInputError(
    '--kernel',
    `kernel ${rel.release}: apt has no package ${candidates.join(' or ')} (${what}) in ${ARCHIVE_SUITES.concat(SECURITY_SUITES).join(', ')}; ` +
      (near.length ? `nearest ${rel.flavour} releases that exist: ${near.join(', ')}` : 'no release of that line and flavour is listed') +
      ` (check: apt-cache policy ${candidates[0]}, or build from a tree with --kernel-dir)`,
  );
}

/** The .deb for the first of `candidates` that is cached or known to apt (downloading it when needed). */
async function ensureDeb(candidates: string[], rel: KernelRelease, what: string, opts: FetchOptions, log: LogFn): Promise<{ pkg: string; deb: string }> {
  const found = await findPackage(candidates, rel, what, opts, log);
  if (found.deb) return { pkg: found.pkg, deb: found.deb };
  try {
    return { pkg: found.pkg, deb: await aptDownload(found.pkg, found.info!, cacheDir('debs'), opts, log) };
  } catch (e) {
    // a listed package the mirror cannot serve (seen: 5.10.0-46-cloud-amd64-unsigned, 404): the next
    // candidate (the signed image carries the same vmlinuz payload and modules) may be there
    const rest = candidates.slice(candidates.indexOf(found.pkg) + 1);
    if (!(e instanceof ToolError) || rest.length === 0) throw e;
    log(`${found.pkg}: ${e.message.split('\n')[0]}; trying ${rest.join(', ')}`);
    return ensureDeb(rest, rel, what, opts, log);
  }
}

// ---------------------------------------------------------------------------------------------
// lock + stamps

function stampPath(dir: string, deb: string, part: string): string {
  return join(dir, '.ciel', `${part}--${deb.split('/').pop()}.done`);
}

/** Serialise fetches of one release across processes (other test files, other engineers' runs). */
async function withLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const lock = join(dir, '.ciel', 'lock');
  mkdirSync(join(dir, '.ciel'), { recursive: true });
  const deadline = Date.now() + 30 * 60_000;
  for (;;) {
    try {
      mkdirSync(lock);
      writeFileSync(join(lock, 'pid'), String(process.pid));
      break;
    } catch {
      let pid = 0;
      try {
        pid = Number(readFileSync(join(lock, 'pid'), 'utf8'));
      } catch {
        /* being created */
      }
      let alive = true;
      if (pid > 0) {
        try {
          process.kill(pid, 0);
        } catch {
          alive = false;
        }
      }
      if (!alive || Date.now() > deadline) {
        rmSync(lock, { recursive: true, force: true });
        continue;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

/** `dpkg-deb -x` once; the stamp counts only while the `mustExist` paths are still there. */
async function dpkgExtractAll(deb: string, dir: string, log: LogFn, mustExist: string[] = []): Promise<void> {
  const stamp = stampPath(dir, deb, 'all');
  if (existsSync(stamp) && mustExist.every((p) => existsSync(p))) return;
  const t0 = performance.now();
  const r = await execa('dpkg-deb', ['-x', deb, dir], { reject: false });
  if (r.exitCode !== 0) throw new ToolError('dpkg-deb', `dpkg-deb -x ${deb} failed: ${r.stderr.trim()}`);
  writeFileSync(stamp, new Date().toISOString());
  log(`extracted ${deb.split('/').pop()} in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
}

// ---------------------------------------------------------------------------------------------
// public API

function timed(log: LogFn): (msg: string, t0: number) => void {
  return (msg, t0) => log(`${msg} in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
}

async function headersInto(rel: KernelRelease, dir: string, opts: FetchOptions, log: LogFn): Promise<{ versions: Record<string, string>; debs: Record<string, string> }> {
  const versions: Record<string, string> = {};
  const debs: Record<string, string> = {};
  const parts: [string[], string, string[]][] = [
    [[rel.packages.common], 'the headers shared by all flavours', [join(dir, 'usr/src', rel.commonName, 'include/linux')]],
    [[rel.packages.headers], 'the flavour headers and .config', [join(dir, 'usr/src', `linux-headers-${rel.release}`, 'include/generated')]],
    [[rel.packages.kbuild], 'kbuild scripts', []],
  ];
  for (const [cands, what, mustExist] of parts) {
    const { pkg, deb } = await ensureDeb(cands, rel, what, opts, log);
    await dpkgExtractAll(deb, dir, log, mustExist);
    versions[pkg] = versionFromDebName(deb);
    debs[pkg] = deb;
  }
  return { versions, debs };
}

function headerTree(rel: KernelRelease, dir: string, versions: Record<string, string>): HeaderTree {
  const commonDir = join(dir, 'usr/src', rel.commonName);
  const archDir = join(dir, 'usr/src', `linux-headers-${rel.release}`);
  for (const d of [join(commonDir, 'include/linux'), join(archDir, 'include/generated')]) {
    if (!existsSync(d)) throw new BadInputError(d, `missing after extracting the headers of ${rel.release}`);
  }
  const imageConfig = join(dir, rel.paths.config);
  return {
    release: rel.release,
    line: rel.line,
    flavour: rel.flavour,
    abi: rel.abi,
    dir,
    workDir: dir,
    commonDir,
    archDir,
    config: existsSync(imageConfig) ? imageConfig : join(archDir, '.config'),
    packageVersions: versions,
  };
}

/** Fetch only the two header trees (+ kbuild) of a release. */
export async function fetchHeaders(release: string, opts: FetchOptions = {}): Promise<HeaderTree> {
  const rel = parseRelease(release);
  const log = opts.log ?? (() => {});
  const dir = cacheDir('kernels', rel.release);
  return withLock(dir, async () => {
    const { versions } = await headersInto(rel, dir, opts, log);
    return headerTree(rel, dir, versions);
  });
}

/** System.map from the -dbg package: from a cached .deb, else streamed from the mirror (only the bytes up to it). */
async function systemMapInto(rel: KernelRelease, dir: string, opts: FetchOptions, log: LogFn, versions: Record<string, string>, debs: Record<string, string>): Promise<string> {
  const systemMap = join(dir, 'System.map');
  const found = await findPackage([rel.packages.dbg], rel, 'the real System.map', opts, log);
  const version = found.deb ? versionFromDebName(found.deb) : found.info!.version;
  versions[found.pkg] = version;
  if (found.deb) debs[found.pkg] = found.deb;
  const mapStamp = join(dir, '.ciel', `system-map--${found.pkg}_${version}.done`);
  const oldStamp = found.deb ? stampPath(dir, found.deb, 'system-map') : '';
  if ((existsSync(mapStamp) || (oldStamp && existsSync(oldStamp))) && existsSync(systemMap)) return systemMap;
  const t0 = performance.now();
  const rep = progressReporter(`System.map from ${found.pkg}`, {
    onProgress: opts.onProgress,
    toStderr: opts.progressOnStderr ?? !opts.onProgress,
    intervalMs: process.stderr.isTTY ? 100 : 2000,
  });
  const wanted = new Map([[`./${rel.paths.dbgSystemMap}`, systemMap]]);
  const onBytes = (d: number, t: number): void => rep.update(d, t);
  const r = found.deb
    ? await extractDebMembers(found.deb, wanted, { onBytes })
    : await extractRemoteDebMembers(found.info!.uri, wanted, { onBytes });
  const secs = (performance.now() - t0) / 1000;
  const how = `${(r.compressedRead / 1048576).toFixed(1)} of ${(r.compressedTotal / 1048576).toFixed(1)} MiB compressed`;
  rep.finish(`found after ${how} in ${secs.toFixed(2)} s`);
  writeFileSync(mapStamp, new Date().toISOString());
  log(`extracted System.map from ${found.deb ? found.deb.split('/').pop() : found.info!.uri} in ${secs.toFixed(2)} s (${found.deb ? 'read' : 'streamed'} ${how})`);
  return systemMap;
}

/** The image package(s): vmlinuz, config and the modules (7.x: linux-binary-unsigned + linux-modules + linux-base). */
async function imageInto(rel: KernelRelease, dir: string, opts: FetchOptions, log: LogFn, versions: Record<string, string>, debs: Record<string, string>): Promise<string> {
  const vmlinuz = join(dir, rel.paths.vmlinuz);
  const modules = join(dir, rel.paths.modulesDir, 'kernel');
  const parts: [string[], string, string[]][] = [[rel.packages.image, 'vmlinuz', rel.packages.modules ? [vmlinuz] : [vmlinuz, modules]]];
  if (rel.packages.modules) parts.push([[rel.packages.modules], 'the modules', [modules]]);
  if (rel.packages.base) parts.push([[rel.packages.base], 'the config', [join(dir, rel.paths.config)]]);
  for (const [cands, what, mustExist] of parts) {
    const got = await ensureDeb(cands, rel, what, opts, log);
    versions[got.pkg] = versionFromDebName(got.deb);
    debs[got.pkg] = got.deb;
    await dpkgExtractAll(got.deb, dir, log, mustExist);
    for (const f of mustExist) {
      if (!existsSync(f)) throw new BadInputError(got.deb, `no ${f.slice(dir.length + 1)} after extracting ${got.pkg}`);
    }
  }
  return vmlinuz;
}

/**
 * Only vmlinuz and the config out of the image package (its BTF is all a build needs where the headers
 * carry no BTF vmlinux: 5.10, 6.1); the modules (most of the package) stay packed until a guest needs them.
 */
async function vmlinuzInto(rel: KernelRelease, dir: string, opts: FetchOptions, log: LogFn, versions: Record<string, string>, debs: Record<string, string>): Promise<string> {
  const vmlinuz = join(dir, rel.paths.vmlinuz);
  const config = join(dir, rel.paths.config);
  const got = await ensureDeb(rel.packages.image, rel, 'vmlinuz', opts, log);
  versions[got.pkg] = versionFromDebName(got.deb);
  debs[got.pkg] = got.deb;
  const stamp = stampPath(dir, got.deb, 'vmlinuz');
  if ((existsSync(stamp) || existsSync(stampPath(dir, got.deb, 'all'))) && existsSync(vmlinuz) && existsSync(config)) return vmlinuz;
  const t0 = performance.now();
  await extractDebMembers(got.deb, new Map([[`./${rel.paths.vmlinuz}`, vmlinuz], [`./${rel.paths.config}`, config]]));
  writeFileSync(stamp, new Date().toISOString());
  log(`extracted vmlinuz and config from ${got.deb.split('/').pop()} in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
  return vmlinuz;
}

/**
 * Fetch everything `ciel build --kernel RELEASE` needs: headers, System.map from the -dbg package
 * (streamed; only that one member is decompressed) and BTF: the BTF-only `vmlinux` of the 6.12/7.x
 * headers package, else the image. With `image: true` (default) the image package(s) are fetched
 * too (vmlinuz to boot, modules); `image: false` skips them where the headers carry the BTF.
 */
export async function fetchKernel(release: string, opts: FetchOptions = {}): Promise<KernelTree & { vmlinuz: string }> {
  const tree = await fetchKernelParts(release, { ...opts, image: true });
  if (!tree.vmlinuz) throw new BadInputError(tree.dir, `no vmlinuz for ${release}`);
  return tree as KernelTree & { vmlinuz: string };
}

/** What `ciel build` needs: like fetchKernel, but the image only where the headers carry no BTF vmlinux (5.10, 6.1). */
export async function fetchKernelForBuild(release: string, opts: FetchOptions = {}): Promise<KernelTree> {
  return fetchKernelParts(release, { ...opts, image: false });
}

async function fetchKernelParts(release: string, opts: FetchOptions & { image: boolean }): Promise<KernelTree> {
  const rel = parseRelease(release);
  const log = opts.log ?? (() => {});
  const time = timed(log);
  const dir = cacheDir('kernels', rel.release);
  return withLock(dir, async () => {
    const tAll = performance.now();
    const { versions, debs } = await headersInto(rel, dir, opts, log);
    const headersVmlinux = rel.paths.headersVmlinux ? join(dir, rel.paths.headersVmlinux) : undefined;
    const btfInHeaders = headersVmlinux !== undefined && existsSync(headersVmlinux);
    let vmlinuz: string | undefined;
    if (opts.image) vmlinuz = await imageInto(rel, dir, opts, log, versions, debs);
    else if (!btfInHeaders) vmlinuz = await vmlinuzInto(rel, dir, opts, log, versions, debs);
    const systemMap = await systemMapInto(rel, dir, opts, log, versions, debs);
    time(`kernel ${rel.release} ready`, tAll);
    const modulesDir = join(dir, rel.paths.modulesDir);
    return {
      ...headerTree(rel, dir, versions),
      vmlinuz,
      vmlinux: btfInHeaders ? headersVmlinux : undefined,
      systemMap,
      modulesDir: existsSync(join(modulesDir, 'kernel')) ? modulesDir : undefined,
      debs,
    };
  });
}

function readRelease(dir: string): string | undefined {
  const kr = join(dir, 'include/config/kernel.release');
  if (existsSync(kr)) return readFileSync(kr, 'utf8').trim();
  const uts = join(dir, 'include/generated/utsrelease.h');
  if (existsSync(uts)) return /UTS_RELEASE\s+"([^"]+)"/.exec(readFileSync(uts, 'utf8'))?.[1];
  return undefined;
}

/**
 * A kernel given as an unpacked build tree (`--kernel-dir DIR --system-map FILE`), where the
 * headers and the generated headers are in the same tree (K == O). vmlinuz is
 * `arch/x86/boot/bzImage`; an uncompressed `vmlinux` in DIR is used for BTF when present.
 */
export function kernelTreeFromDir(dir: string, systemMapFile: string): KernelTree {
  const d = resolve(dir);
  if (!existsSync(join(d, 'include/linux')) || !existsSync(join(d, 'arch/x86/include'))) {
    throw new BadInputError(d, 'not a kernel build tree (include/linux or arch/x86/include missing)');
  }
  if (!existsSync(join(d, 'include/generated')) || !existsSync(join(d, 'arch/x86/include/generated'))) {
    throw new BadInputError(d, 'kernel tree is not configured/built (include/generated missing): run make olddefconfig prepare');
  }
  if (!existsSync(systemMapFile)) throw new BadInputError(systemMapFile, 'System.map not found');
  const release = readRelease(d);
  if (!release) throw new BadInputError(d, 'cannot tell the kernel release (no include/config/kernel.release)');
  let flavour: Flavour | 'custom' = 'custom';
  let abi = release;
  try {
    const rel = parseRelease(release);
    flavour = rel.flavour;
    abi = rel.abi;
  } catch {
    /* a non-Debian release string is fine here */
  }
  const vmlinux = join(d, 'vmlinux');
  const workDir = cacheDir('kernel-dirs', createHash('sha256').update(d).digest('hex').slice(0, 16));
  return {
    release,
    flavour,
    abi,
    dir: d,
    workDir,
    commonDir: d,
    archDir: d,
    config: join(d, '.config'),
    packageVersions: {},
    vmlinuz: join(d, 'arch/x86/boot/bzImage'),
    vmlinux: existsSync(vmlinux) ? vmlinux : undefined,
    systemMap: resolve(systemMapFile),
    debs: {},
  };
}
