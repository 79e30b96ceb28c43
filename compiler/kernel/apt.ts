// A private apt state in Ciel's cache (`cacheDir('apt')`): its own sources list, package lists and
// archive cache, so looking up and downloading kernel packages of any Debian suite never touches
// the system's apt configuration or lists. The mirror URIs come from the host's own sources files
// (one-line `.list` and deb822 `.sources`); the suites are every one that carries a kernel line
// (a suite's main holds only its current ABI: older and newer ABIs sit in -updates / -security).

import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { cacheDir } from '../../common/cache.ts';
import { ToolError } from '../../common/errors.ts';
import type { LogFn } from './progress.ts';

export const ARCHIVE_SUITES = [
  'bullseye', 'bullseye-updates', 'bookworm', 'bookworm-updates', 'bookworm-backports',
  'trixie', 'trixie-updates', 'trixie-backports', 'sid',
];
export const SECURITY_SUITES = ['bullseye-security', 'bookworm-security', 'trixie-security'];

const DEFAULT_KEYRING = '/usr/share/keyrings/debian-archive-keyring.gpg';

export interface Mirrors {
  archive: string;
  security?: string;
  keyring: string;
}

interface SourceEntry {
  uri: string;
  suites: string[];
  signedBy?: string;
}

/** Entries of one-line (`deb [opts] URI SUITE COMP...`) and deb822 (`Types: deb` ...) sources files. */
export function parseSourcesText(text: string, deb822: boolean): SourceEntry[] {
  const out: SourceEntry[] = [];
  if (deb822) {
    for (const para of text.split(/\n\s*\n/)) {
      const field = (name: string): string | undefined =>
        new RegExp(`^${name}:\\s*(.+)$`, 'mi').exec(para.split('\n').filter((l) => !l.trimStart().startsWith('#')).join('\n'))?.[1]?.trim();
      if (!/\bdeb\b/.test(field('Types') ?? '') || /^no$/i.test(field('Enabled') ?? 'yes')) continue;
      const suites = (field('Suites') ?? '').split(/\s+/).filter(Boolean);
      for (const uri of (field('URIs') ?? '').split(/\s+/).filter(Boolean)) out.push({ uri, suites, signedBy: field('Signed-By') });
    }
    return out;
  }
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    const m = /^deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)/.exec(line);
    if (!m) continue;
    const signedBy = /signed-by=(\S+)/.exec(m[1] ?? '')?.[1];
    out.push({ uri: m[2]!, suites: [m[3]!], signedBy });
  }
  return out;
}

const CODENAMES = /^(buster|bullseye|bookworm|trixie|forky|sid|stable|oldstable|testing|unstable)(-updates|-backports|-proposed-updates)?$/;

/** The Debian archive and security mirrors the host's apt uses (its sources files). */
export function hostMirrors(etc = '/etc/apt'): Mirrors {
  const entries: SourceEntry[] = [];
  const main = join(etc, 'sources.list');
  if (existsSync(main)) entries.push(...parseSourcesText(readFileSync(main, 'utf8'), false));
  const partsDir = join(etc, 'sources.list.d');
  if (existsSync(partsDir)) {
    for (const f of readdirSync(partsDir).sort()) {
      if (f.endsWith('.list')) entries.push(...parseSourcesText(readFileSync(join(partsDir, f), 'utf8'), false));
      else if (f.endsWith('.sources')) entries.push(...parseSourcesText(readFileSync(join(partsDir, f), 'utf8'), true));
    }
  }
  const archive = entries.find((e) => e.suites.some((s) => CODENAMES.test(s)));
  const security = entries.find((e) => e.suites.some((s) => /-security$/.test(s)));
  if (!archive) {
    throw new ToolError('apt', `no Debian archive in ${main} or ${partsDir} (a 'deb URI bookworm main' entry); Ciel takes the mirror URI from there`);
  }
  return { archive: archive.uri, security: security?.uri, keyring: archive.signedBy ?? DEFAULT_KEYRING };
}

/** The private sources.list for these mirrors. */
export function privateSourcesList(m: Mirrors): string {
  const opts = `[arch=amd64 signed-by=${m.keyring}]`;
  const lines = ARCHIVE_SUITES.map((s) => `deb ${opts} ${m.archive} ${s} main`);
  if (m.security) lines.push(...SECURITY_SUITES.map((s) => `deb ${opts} ${m.security} ${s} main`));
  return lines.join('\n') + '\n';
}

/** The private apt state: its folder and the `-o` options every apt call gets. */
export class PrivateApt {
  readonly dir: string;
  readonly options: string[];
  private updatedThisProcess = false;

  constructor(dir = cacheDir('apt'), mirrors?: Mirrors) {
    this.dir = dir;
    const lists = join(dir, 'lists');
    const archives = join(dir, 'cache', 'archives');
    mkdirSync(join(lists, 'partial'), { recursive: true });
    mkdirSync(join(archives, 'partial'), { recursive: true });
    const sources = join(dir, 'sources.list');
    // nothing is ever installed through this state: an empty dpkg status
    const status = join(dir, 'status');
    if (!existsSync(status)) writeFileSync(status, '');
    const text = privateSourcesList(mirrors ?? hostMirrors());
    if (!existsSync(sources) || readFileSync(sources, 'utf8') !== text) writeFileSync(sources, text);
    this.options = [
      '-o', `Dir::Etc::sourcelist=${sources}`,
      '-o', 'Dir::Etc::sourceparts=-',
      '-o', `Dir::State::Lists=${lists}`,
      // without its own Dir::Cache apt may answer from the system's package cache
      '-o', `Dir::Cache=${join(dir, 'cache')}`,
      // a binary cache of the lists (Debian's docker images turn it off system-wide): ~0.3 s per
      // look-up instead of ~3.5 s parsing 80 MB of lists each time
      '-o', 'Dir::Cache::pkgcache=pkgcache.bin',
      '-o', 'Dir::Cache::srcpkgcache=srcpkgcache.bin',
      '-o', `Dir::State::status=${status}`,
      '-o', 'APT::Architectures::=amd64',
      '-o', 'Acquire::Languages=none',
      '-o', 'APT::Sandbox::User=root',
    ];
  }

  /** true when the private lists were never fetched */
  get empty(): boolean {
    const lists = join(this.dir, 'lists');
    return !readdirSync(lists).some((f) => /_Packages(\.[a-z0-9]+)?$/.test(f));
  }

  /** age of the lists in seconds (Infinity when empty) */
  get ageSeconds(): number {
    if (this.empty) return Infinity;
    const lists = join(this.dir, 'lists');
    const newest = Math.max(...readdirSync(lists).filter((f) => /_Packages(\.[a-z0-9]+)?$/.test(f)).map((f) => statSync(join(lists, f)).mtimeMs));
    return (Date.now() - newest) / 1000;
  }

  get updated(): boolean {
    return this.updatedThisProcess;
  }

  /** `apt-get update` on the private state (announced through `log`); once per process. */
  async update(log: LogFn, why: string): Promise<void> {
    if (this.updatedThisProcess) return;
    this.updatedThisProcess = true;
    const say = `apt-get update of Ciel's private apt state ${this.dir} (${why})`;
    log(say);
    if (!process.env.VITEST) process.stderr.write(`ciel: ${say}\n`);
    const t0 = performance.now();
    const r = await this.run('apt-get', ['update']);
    if (r.exitCode !== 0) {
      throw new ToolError('apt-get', `apt-get update (private state ${this.dir}) failed (exit ${r.exitCode}): ${r.stderr.trim().slice(-2000)}`);
    }
    log(`apt-get update done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }

  async run(tool: 'apt-get' | 'apt-cache', args: string[], cwd?: string): Promise<{ exitCode: number; stdout: string; stderr: string }> {
    try {
      const r = await execa(tool, [...this.options, ...args], { cwd, reject: false, env: { LC_ALL: 'C' }, maxBuffer: 256 * 1024 * 1024 });
      return { exitCode: r.exitCode ?? 1, stdout: r.stdout, stderr: r.stderr };
    } catch (e) {
      throw new ToolError(tool, `cannot run (${(e as Error).message}); Ciel needs Debian's apt to fetch kernel packages`);
    }
  }

  /** Candidate version, size and download URI of a package, or undefined when the lists do not have it. */
  async info(pkg: string): Promise<{ version: string; size: number; uri: string } | undefined> {
    const r = await this.run('apt-cache', ['show', '--no-all-versions', pkg]);
    if (r.exitCode !== 0 || !r.stdout.trim()) return undefined;
    const version = /^Version: (\S+)/m.exec(r.stdout)?.[1];
    const size = Number(/^Size: (\d+)/m.exec(r.stdout)?.[1] ?? 0);
    if (!version) return undefined;
    const u = await this.run('apt-get', ['--print-uris', 'download', `${pkg}=${version}`]);
    const uri = /^'([^']+)'/m.exec(u.stdout)?.[1] ?? '';
    return { version, size, uri };
  }

  /** Names of every package in the lists starting with `prefix` (for "nearest releases" errors). */
  async namesStartingWith(prefix: string): Promise<string[]> {
    const r = await this.run('apt-cache', ['pkgnames', prefix]);
    return r.exitCode === 0 ? r.stdout.split('\n').filter(Boolean) : [];
  }
}

let shared: PrivateApt | undefined;
let sharedBase: string | undefined;

/** The process's private apt state (one per cache folder). */
export function privateApt(): PrivateApt {
  const dir = cacheDir('apt');
  if (!shared || sharedBase !== dir) {
    shared = new PrivateApt(dir);
    sharedBase = dir;
  }
  return shared;
}
