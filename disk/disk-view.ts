// Raw views of a VM's disk image for the disk readers (debugfs, e2fsck), without ever writing the image:
//
// * raw images are read as they are;
// * qcow2 is exposed as a raw view by qemu-storage-daemon's FUSE export (no kernel module but fuse, no copy:
//   ~20 ms to set up whatever the image size), or, where FUSE is missing, copied whole to a sparse
//   temporary raw file by `qemu-img convert` (time grows with the allocated data);
// * a *scratch* view adds a private copy-on-write layer (a temporary qcow2 whose backing file is the image,
//   opened read-only): writes go to the layer only. It exists so that the guest's ext4 journal can be
//   replayed (debugfs journal_run) before reading: on a running guest, what was written in the last seconds to tens of
//   seconds (a container's new config.v2.json) is in the journal and not yet in place, and a reader that
//   ignores the journal sees the directory and inode blocks as they were before — a name missing, or an
//   inode half old and half new.

import { existsSync } from 'node:fs';
import { mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BadInputError, ToolError } from '../common/errors.ts';
import { run } from './tool-run.ts';

export type DiskFormat = 'raw' | 'qcow2';

/** A raw view of a disk image; `path` is usable until release(). */
export interface RawView {
  path: string;
  /** true when writes to `path` land in a private layer or copy (the journal may be replayed into it) */
  scratch: boolean;
  release(): Promise<void>;
}

/** 'qcow2' by its magic, else 'raw'. Other formats qemu knows (vmdk, vdi, vhdx) are refused by name. */
export async function detectFormat(path: string): Promise<DiskFormat> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    throw new BadInputError(path, `cannot open the disk image: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  try {
    const b = Buffer.alloc(8);
    await fh.read(b, 0, 8, 0);
    if (b.readUInt32BE(0) === 0x514649fb) return 'qcow2';
    const magic = b.toString('latin1');
    if (magic.startsWith('KDMV') || magic.startsWith('conectix') || magic.startsWith('vhdxfile') || magic.startsWith('<<< '))
      throw new BadInputError(path, `disk format not supported (only raw and qcow2; convert with qemu-img)`);
    return 'raw';
  } finally {
    await fh.close();
  }
}

async function waitUnmounted(mountpoint: string, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const mounts = await readFile('/proc/self/mounts', 'utf8').catch(() => '');
    if (!mounts.split('\n').some((l) => l.split(' ')[1] === mountpoint)) return;
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** qemu-storage-daemon processes of live views: ended if this process exits before releasing them */
const liveDaemons = new Set<number>();
let exitHookInstalled = false;
function trackDaemon(pid: number) {
  liveDaemons.add(pid);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const p of liveDaemons) {
        try {
          process.kill(p, 'SIGTERM');
        } catch {
          /* gone */
        }
      }
    });
  }
}

/**
 * A raw view through qemu-storage-daemon's FUSE export. `scratch`: over a private temporary qcow2 layer
 * (writable; the image itself stays read-only), else read-only at every layer. force-share: a running
 * QEMU holds the image's write lock.
 */
async function fuseView(image: string, format: DiskFormat, scratch: boolean, timeoutMs: number): Promise<RawView> {
  const dir = await mkdtemp(join(tmpdir(), 'ciel-disk-'));
  const mnt = join(dir, 'disk.raw');
  const pidfile = join(dir, 'qsd.pid');
  const esc = (s: string) => s.replace(/,/g, ',,');
  const fail = async (e: unknown) => {
    await rm(dir, { recursive: true, force: true });
    throw e;
  };
  await writeFile(mnt, '');
  const blockdevs = [
    `driver=file,node-name=file0,filename=${esc(image)},read-only=on,force-share=on`,
    `driver=${format},node-name=disk0,file=file0,read-only=on,force-share=on`,
  ];
  let top = 'disk0';
  if (scratch) {
    const layer = join(dir, 'scratch.qcow2');
    // -u: the backing file is not opened here (a running QEMU holds its lock); its size is given instead
    const size = await virtualSize(image, format);
    const made = await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', image, '-F', format, layer, String(size)], { timeoutMs }).catch(fail);
    if (made.code !== 0) await fail(new ToolError('qemu-img', made.stderr.trim() || `exit code ${made.code}`));
    blockdevs.push(`driver=file,node-name=file1,filename=${esc(layer)}`, `driver=qcow2,node-name=scratch0,file=file1,backing=disk0`);
    top = 'scratch0';
  }
  const r = await run(
    'qemu-storage-daemon',
    [
      ...blockdevs.flatMap((b) => ['--blockdev', b]),
      '--export',
      `type=fuse,id=exp0,node-name=${top},mountpoint=${esc(mnt)},writable=${scratch ? 'on' : 'off'}`,
      '--daemonize',
      '--pidfile',
      pidfile,
    ],
    { timeoutMs },
  ).catch(fail);
  if (r.code !== 0) {
    await rm(dir, { recursive: true, force: true });
    const msg = r.stderr.trim() || `exit code ${r.code}`;
    if (/qcow2|Image is not in qcow2 format|Could not open|corrupt/i.test(msg)) throw new BadInputError(image, `cannot open as ${format}: ${msg}`);
    throw new ToolError('qemu-storage-daemon', msg);
  }
  const pid = Number((await readFile(pidfile, 'utf8')).trim());
  if (Number.isInteger(pid) && pid > 1) trackDaemon(pid);
  return {
    path: mnt,
    scratch,
    async release() {
      if (Number.isInteger(pid) && pid > 1) {
        try {
          process.kill(pid, 'SIGTERM'); // the daemon unmounts its FUSE export on SIGTERM
        } catch {
          /* already gone */
        }
        await waitUnmounted(mnt, 3000);
        liveDaemons.delete(pid);
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The disk size the guest sees: the qcow2 header's (big-endian u64 at byte 24), or a raw file's length. */
async function virtualSize(image: string, format: DiskFormat): Promise<number> {
  if (format === 'raw') return (await stat(image)).size;
  const fh = await open(image, 'r');
  try {
    const b = Buffer.alloc(8);
    await fh.read(b, 0, 8, 24);
    const size = b.readBigUInt64BE(0);
    if (size === 0n || size > 1n << 50n || size % 512n !== 0n) throw new BadInputError(image, `cannot open as qcow2: its header gives an impossible disk size (${size})`);
    return Number(size);
  } finally {
    await fh.close();
  }
}

/** A private raw copy of a qcow2 image (`qemu-img convert`); writable, so it is a scratch view too. */
async function convertView(image: string, timeoutMs: number): Promise<RawView> {
  const dir = await mkdtemp(join(tmpdir(), 'ciel-disk-'));
  const out = join(dir, 'disk.raw');
  const r = await run('qemu-img', ['convert', '-U', '-f', 'qcow2', '-O', 'raw', image, out], { timeoutMs }).catch(async (e) => {
    await rm(dir, { recursive: true, force: true });
    throw e;
  });
  if (r.code !== 0) {
    await rm(dir, { recursive: true, force: true });
    throw new BadInputError(image, `cannot read as qcow2: ${r.stderr.trim() || `qemu-img exit code ${r.code}`}`);
  }
  return { path: out, scratch: true, release: () => rm(dir, { recursive: true, force: true }) };
}

export interface ViewOptions {
  /** qcow2: 'fuse' (qemu-storage-daemon, default when /dev/fuse exists) or 'convert' (qemu-img convert to a temp file) */
  qcow2Method?: 'fuse' | 'convert';
  /** a scratch view (journal replay possible) when it costs no copy; default true */
  scratch?: boolean;
  timeoutMs: number;
}

/**
 * A raw view of `image`. A scratch one where that is cheap (FUSE, or the copy `convert` makes anyway);
 * else — a raw block device, or no FUSE for a raw file — the image itself, read-only.
 */
export async function openView(image: string, o: ViewOptions): Promise<RawView> {
  const format = await detectFormat(image);
  const fuse = existsSync('/dev/fuse');
  const scratch = o.scratch ?? true;
  if (format === 'raw') {
    const regular = (await stat(image)).isFile();
    if (scratch && fuse && regular) {
      try {
        return await fuseView(image, 'raw', true, o.timeoutMs);
      } catch (e) {
        if (!(e instanceof ToolError)) throw e;
        // no usable qemu-storage-daemon: the image as it is (journal not replayed)
      }
    }
    return { path: image, scratch: false, release: async () => {} };
  }
  const method = o.qcow2Method ?? (fuse ? 'fuse' : 'convert');
  if (method === 'convert') return convertView(image, o.timeoutMs);
  try {
    return await fuseView(image, 'qcow2', scratch, o.timeoutMs);
  } catch (e) {
    // FUSE chosen by default but unusable here (no qemu-storage-daemon, mount refused): copy instead
    if (o.qcow2Method === undefined && e instanceof ToolError && e.tool === 'qemu-storage-daemon') return convertView(image, o.timeoutMs);
    throw e;
  }
}

/**
 * Replay the ext4 journal of the filesystem at `offset` into a scratch view: debugfs's `journal_run`
 * (recovery only). Not e2fsck: even with `-E journal_only` it goes on to a full repair when the group
 * descriptors look bad, which would hide a damaged filesystem behind a "repaired" one. Nothing to
 * replay costs a few ms. Returns why it could not be replayed, or undefined; the caller then reads the
 * filesystem as it is on disk.
 */
export async function replayJournal(view: RawView, offset: number, timeoutMs: number): Promise<string | undefined> {
  if (!view.scratch) return 'the view is read-only';
  const dev = offset ? `${view.path}?offset=${offset}` : view.path;
  try {
    // `-w` writes the scratch layer only (see RawView.scratch); debugfs exits 0 even when a command fails
    const r = await run('debugfs', ['-w', '-R', 'journal_run', dev], { timeoutMs });
    const failed = r.stderr.split('\n').find((l) => /^journal_run: |while (trying to open|opening)/.test(l));
    return failed?.trim();
  } catch (e) {
    return (e as Error).message;
  }
}
