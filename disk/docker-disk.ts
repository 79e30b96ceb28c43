// Container names (and images, labels, limits) read from a VM's disk image, without mounting it and without ever
// writing to it — the paper's sec. 4.1 (losetup + kpartx + mount -o ro) without root mounts.
//
//   /var/lib/docker/containers/<id>/config.v2.json  ->  { Name: "/nginx", Config: { Image: "nginx:1.25", Labels } }
//   /var/lib/docker/containers/<id>/hostconfig.json ->  limits (parsed in docker-config.ts)
//
// * ext2/3/4 is read with e2fsprogs' debugfs in catastrophic read-only mode (`-c`: no journal replay,
//   bitmaps not read). Partitioned disks: the filesystem offset is found from the MBR/GPT (partitions.ts)
//   and handed to debugfs as `image?offset=N`.
// * The image is read through a raw view (disk-view.ts: FUSE export of a qcow2, or a copy); where the view
//   has a private copy-on-write layer, the guest's ext4 journal is replayed into that layer first, so a
//   container Docker created seconds ago is seen at once (its files are in the journal, not yet in place).
//   Without one (a raw block device, no FUSE) the journal is not replayed: such a container is named once
//   the guest checkpoints its journal, picked up by the refresh on an unknown id.
// * The guest is untrusted: container ids are checked to be 64 hex digits before they appear in a
//   debugfs command, config files larger than 1 MiB are skipped, every tool runs under a timeout
//   and an output cap (tool-run.ts).
// * Cached by (image path, mtime, size); refreshed when the image changes or when an unknown
//   Docker id is asked for (at most once per `minRefreshMs`). A block device (LVM volume) works
//   like a raw image, but its mtime does not follow writes: there only unknown ids trigger a re-read.

import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BadInputError } from '../common/errors.ts';
import type { Sample } from '../vmi/sample.ts';
import { type DockerContainerInfo, parseDockerConfig, parseHostConfig } from './docker-config.ts';
import { type FsLocation, findExtFilesystems } from './partitions.ts';
import { detectFormat, openView, replayJournal, type DiskFormat, type RawView } from './disk-view.ts';
import { run, type RunResult } from './tool-run.ts';

export { type DockerContainerInfo, parseDockerConfig, parseHostConfig, detectFormat, type DiskFormat };

export interface DockerNamesOptions {
  /** the Docker data root inside the guest; default /var/lib/docker (also tried relative to a separate /var or /var/lib filesystem) */
  dockerRoot?: string;
  /** min milliseconds between refreshes triggered by unknown ids; default 10000 */
  minRefreshMs?: number;
  /** 'fuse' (qemu-storage-daemon, default when /dev/fuse exists) or 'convert' (qemu-img convert to a temp file) */
  qcow2Method?: 'fuse' | 'convert';
  /** replay the guest's ext4 journal into a private layer before reading (default true; see above) */
  replayJournal?: boolean;
  /** per-tool timeout, ms; default 60000 */
  timeoutMs?: number;
}

const ID_RE = /^[0-9a-f]{64}$/;
const MAX_CONFIG_BYTES = 1 << 20;

/** debugfs in catastrophic read-only mode on the filesystem at `offset` of `rawPath`. */
async function debugfs(rawPath: string, offset: number, commands: string[], timeoutMs: number): Promise<RunResult> {
  const dev = offset ? `${rawPath}?offset=${offset}` : rawPath;
  // `-c` implies read-only; no `-w` ever
  const r = await run('debugfs', ['-c', '-f', '-', dev], { input: commands.join('\n') + '\n', timeoutMs });
  const open = /while trying to open|while opening filesystem|Filesystem not open/.exec(r.stderr);
  if (open) {
    const line = r.stderr.split('\n').find((l) => /while trying to open|while opening/.test(l)) ?? r.stderr.trim();
    throw new BadInputError(rawPath, `not a readable ext2/3/4 filesystem at offset ${offset}: ${line.replace(/^debugfs: /, '').trim()}`);
  }
  return r;
}

interface LsEntry {
  inode: number;
  mode: number;
  name: string;
  size: number;
}

/** Parse `ls -p` lines: /inode/mode/uid/gid/name/size/ */
function parseLs(text: string): LsEntry[] {
  const out: LsEntry[] = [];
  for (const line of text.split('\n')) {
    const m = /^\/(\d+)\/([0-7]+)\/\d+\/\d+\/(.*)\/(\d*)\/$/.exec(line);
    if (m) out.push({ inode: Number(m[1]), mode: parseInt(m[2], 8), name: m[3], size: m[4] === '' ? 0 : Number(m[4]) });
  }
  return out;
}

/** Split the stdout of `debugfs -f` into the outputs of each command (it echoes "debugfs: <cmd>"). */
function splitByCommand(stdout: string): Map<string, string> {
  const res = new Map<string, string>();
  let cur: string | null = null;
  let buf: string[] = [];
  for (const line of stdout.split('\n')) {
    const m = /^debugfs: (.*)$/.exec(line);
    if (m) {
      if (cur !== null) res.set(cur, buf.join('\n'));
      cur = m[1];
      buf = [];
    } else buf.push(line);
  }
  if (cur !== null) res.set(cur, buf.join('\n'));
  return res;
}

function containerDirs(root: string): string[] {
  const r = root.replace(/\/+$/, '');
  const dirs = [`${r}/containers`];
  // a separate /var or /var/lib filesystem sees the path without that prefix
  if (r.startsWith('/var/lib/')) dirs.push(`${r.slice(4)}/containers`, `${r.slice(8)}/containers`);
  else if (r.startsWith('/var/')) dirs.push(`${r.slice(4)}/containers`);
  return dirs;
}

/**
 * Read all containers' names/images from a disk image (one shot, no cache).
 * Throws BadInputError for an unreadable/corrupt image, ToolError for a missing tool.
 */
export async function readDockerNames(image: string, opts: DockerNamesOptions = {}): Promise<Map<string, DockerContainerInfo>> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const view = await openView(image, { qcow2Method: opts.qcow2Method, scratch: opts.replayJournal ?? true, timeoutMs });
  try {
    const filesystems = await findExtFilesystems(view.path).catch((e: unknown) => {
      // the raw view of a qcow2 is a temp path: name the image the user gave
      if (e instanceof BadInputError && view.path !== image) throw new BadInputError(image, e.message.slice(view.path.length + 2));
      throw e;
    });
    // a disk without a Docker directory is not an error: that VM simply has no names (yet)
    const result = new Map<string, DockerContainerInfo>();
    for (const fs of filesystems) {
      if (view.scratch && opts.replayJournal !== false) await replayJournal(view, fs.offset, timeoutMs);
      const found = await readFromFs(view.path, fs, opts.dockerRoot ?? '/var/lib/docker', timeoutMs);
      for (const [k, v] of found ?? []) result.set(k, v);
    }
    return result;
  } catch (e) {
    if (e instanceof BadInputError && e.file === view.path && view.path !== image) throw new BadInputError(image, e.message.slice(view.path.length + 2));
    throw e;
  } finally {
    await view.release();
  }
}

async function readFromFs(
  raw: string,
  fs: FsLocation,
  dockerRoot: string,
  timeoutMs: number,
): Promise<Map<string, DockerContainerInfo> | null> {
  // 1. list the candidate containers directories in one debugfs run
  const dirs = containerDirs(dockerRoot);
  const listed = await debugfs(raw, fs.offset, ['ls -p /', ...dirs.map((d) => `ls -p ${d}`)], timeoutMs);
  const listing = splitByCommand(listed.stdout);
  // a readable ext filesystem always lists its root ("." and ".."); nothing means a damaged one
  if (!parseLs(listing.get('ls -p /') ?? '').some((e) => e.name === '.')) {
    const why = listed.stderr.split('\n').find((l) => /^ls: /.test(l))?.slice(4).trim();
    throw new BadInputError(raw, `the ext filesystem in ${fs.where} (offset ${fs.offset}) is damaged: its root directory cannot be read${why ? ` (${why})` : ''}`);
  }
  let dir: string | undefined;
  let ids: string[] = [];
  for (const d of dirs) {
    const entries = parseLs(listing.get(`ls -p ${d}`) ?? '');
    if (!entries.length) continue;
    dir = d;
    ids = entries.filter((e) => (e.mode & 0o170000) === 0o040000 && ID_RE.test(e.name)).map((e) => e.name);
    break;
  }
  if (!dir) return null;
  const out = new Map<string, DockerContainerInfo>();
  if (!ids.length) return out;

  // 2. sizes of the config files (skip absurd ones: the guest is untrusted); hostconfig.json (limits) is optional
  const sizes = splitByCommand((await debugfs(raw, fs.offset, ids.map((id) => `ls -p ${dir}/${id}`), timeoutMs)).stdout);
  const readable = (id: string, file: string) => {
    const e = parseLs(sizes.get(`ls -p ${dir}/${id}`) ?? '').find((x) => x.name === file);
    return e !== undefined && (e.mode & 0o170000) === 0o100000 && e.size <= MAX_CONFIG_BYTES;
  };
  const wanted = ids.filter((id) => readable(id, 'config.v2.json'));
  if (!wanted.length) return out;
  const withHost = new Set(wanted.filter((id) => readable(id, 'hostconfig.json')));

  // 3. dump them into a private temp dir in one run
  const tmp = await mkdtemp(join(tmpdir(), 'ciel-names-'));
  try {
    const dumps = wanted.flatMap((id) => [
      `dump ${dir}/${id}/config.v2.json ${tmp}/${id}.json`,
      ...(withHost.has(id) ? [`dump ${dir}/${id}/hostconfig.json ${tmp}/${id}.host.json`] : []),
    ]);
    await debugfs(raw, fs.offset, dumps, timeoutMs);
    for (const id of wanted) {
      const text = await readFile(join(tmp, `${id}.json`), 'utf8').catch(() => null);
      const info = text === null ? null : parseDockerConfig(id, text);
      if (!info) continue;
      const host = withHost.has(id) ? await readFile(join(tmp, `${id}.host.json`), 'utf8').catch(() => null) : null;
      const limits = host === null ? undefined : parseHostConfig(host);
      if (limits) info.limits = limits;
      out.set(id, info);
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return out;
}

interface CacheEntry {
  mtimeMs: number;
  size: number;
  infos: Map<string, DockerContainerInfo>;
  readAt: number;
}

/**
 * Names of the containers of one VM from its disk image, cached by (path, mtime, size).
 */
export class DockerDiskNames {
  private entry: CacheEntry | undefined;
  private pending: Promise<Map<string, DockerContainerInfo>> | undefined;
  /** number of times the disk was actually read (for tests and the operator's curiosity) */
  reads = 0;

  constructor(
    readonly image: string,
    private readonly opts: DockerNamesOptions = {},
  ) {}

  /**
   * Names for `ids` (all known when omitted). Re-reads the disk when the image changed, or when a
   * Docker id (64 hex) is unknown and the last read is older than minRefreshMs.
   */
  async lookup(ids?: Iterable<string>): Promise<Map<string, DockerContainerInfo>> {
    const st = await stat(this.image).catch((e: NodeJS.ErrnoException) => {
      throw new BadInputError(this.image, `cannot stat the disk image: ${e.code ?? String(e)}`);
    });
    const want = ids ? [...ids] : undefined;
    let e = this.entry;
    const changed = !e || e.mtimeMs !== st.mtimeMs || e.size !== st.size;
    const unknown =
      e !== undefined &&
      want !== undefined &&
      want.some((id) => ID_RE.test(id) && !e!.infos.has(id)) &&
      Date.now() - e.readAt >= (this.opts.minRefreshMs ?? 10_000);
    if (changed || unknown) e = await this.refresh(st.mtimeMs, st.size);
    const infos = e!.infos;
    if (!want) return new Map(infos);
    const res = new Map<string, DockerContainerInfo>();
    for (const id of want) {
      const i = infos.get(id);
      if (i) res.set(id, i);
    }
    return res;
  }

  private async refresh(mtimeMs: number, size: number): Promise<CacheEntry> {
    // one read at a time, shared by concurrent callers
    if (!this.pending) {
      this.reads++;
      this.pending = readDockerNames(this.image, this.opts).finally(() => {
        this.pending = undefined;
      });
    }
    const infos = await this.pending;
    this.entry = { mtimeMs, size, infos, readAt: Date.now() };
    return this.entry;
  }
}


/** A copy of `sample` whose containers carry the names known from the disk (a name already in the sample wins). */
export function applyNames(sample: Sample, infos: Map<string, DockerContainerInfo>): Sample {
  return {
    ...sample,
    containers: sample.containers.map((c) => {
      const i = infos.get(c.id);
      return c.name !== undefined || !i ? c : { ...c, name: i.name };
    }),
  };
}
