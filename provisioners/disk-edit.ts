// Offline edits of a new VM's disk before it boots (paper 000 sec. 4.4: "it mounts the virtual disk in a
// writable manner and writes a script file ... This does not corrupt the virtual disk because the VM is
// still not running"), without mounting anything on the host: debugfs -w works on the ext2/3/4
// filesystem inside a raw file.
//
// - raw images (sparse copies): debugfs -w on the image itself.
// - qcow2 overlays (the usual clone): qemu-storage-daemon exports the overlay as a *writable* raw view
//   through FUSE (`--export type=fuse,writable=on`; only /dev/fuse is needed, no nbd module, no copy);
//   debugfs writes through it, and every written cluster lands in the overlay — the template (backing
//   file) is opened read-only and never changes. Setup costs tens of milliseconds whatever the disk size.
// - fallback without FUSE: qemu-img convert the overlay to a temporary raw file, edit it, and convert it
//   back into a new overlay on the same backing file (-B): correct, but copies the whole disk.
//
// What gets written (the guest's init reads these, guest.ts):
// - /etc/ciel/containers.enabled: the containers this VM starts (one per line), and /etc/ciel/net with
//   `ip=`/`vip=` (the container's new address);
// - or, for Docker guests, each container's /var/lib/docker/containers/<id>/hostconfig.json restart
//   policy (`always` for the needed ones, `no` for all others; config.v2.json names the container) —
//   exactly Ciel's edit in the paper;
// - for systemd guests, what systemd reads: symlinks to enable units (systemd 252 ignores plain files in
//   `*.wants/`), `<unit>.d/*.conf` drop-ins, the VM's systemd-networkd `.network` file, and Docker's
//   daemon.json (e.g. the cgroup driver).

import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync, renameSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { BadInputError, ToolError } from '../common/errors.ts';
import { abortableSleep as sleep } from '../common/sleep.ts';

export type DiskEditMethod = 'raw' | 'fuse' | 'convert';

/** Reads and writes files of the ext4 filesystem in a raw view of the disk (debugfs). */
export class Ext4Editor {
  private readonly tmp: string;
  private n = 0;
  /** files written (guest paths), for the report */
  readonly written: string[] = [];

  constructor(readonly rawPath: string) {
    this.tmp = mkdtempSync(join(tmpdir(), 'ciel-edit-'));
  }

  private async debugfs(commands: string[], write: boolean): Promise<{ stdout: string; stderr: string }> {
    const args = write ? ['-w', '-f', '-', this.rawPath] : ['-c', '-f', '-', this.rawPath];
    const r = await execa('debugfs', args, { input: commands.join('\n') + '\n', reject: false, encoding: 'buffer' });
    const stderr = Buffer.from(r.stderr as Uint8Array).toString('utf8');
    if (/while trying to open|while opening filesystem|Filesystem not open/.test(stderr)) {
      throw new BadInputError(this.rawPath, `not an ext2/3/4 filesystem: ${stderr.trim().split('\n').pop()}`);
    }
    return { stdout: Buffer.from(r.stdout as Uint8Array).toString('latin1'), stderr };
  }

  /** File contents, or null when it does not exist. */
  async readFile(path: string): Promise<Buffer | null> {
    await this.replayJournalFirst();
    const out = join(this.tmp, `r${this.n++}`);
    const r = await this.debugfs([`dump ${q(path)} ${out}`], false);
    if (!existsSync(out) || /File not found|not found by ext2_lookup/.test(r.stderr)) return null;
    const b = readFileSync(out);
    rmSync(out, { force: true });
    return b;
  }

  async exists(path: string): Promise<boolean> {
    await this.replayJournalFirst();
    const r = await this.debugfs([`stat ${q(path)}`], false);
    return !/File not found|not found by ext2_lookup/.test(r.stderr);
  }

  /** Names in a directory (without . and ..), or null when it does not exist. */
  async list(dir: string): Promise<{ name: string; dir: boolean }[] | null> {
    await this.replayJournalFirst();
    const r = await this.debugfs([`ls -p ${q(dir)}`], false);
    if (/File not found|not found by ext2_lookup/.test(r.stderr)) return null;
    const res: { name: string; dir: boolean }[] = [];
    for (const line of r.stdout.split('\n')) {
      const m = /^\/(\d+)\/(\d+)\/\d+\/\d+\/(.*)\/\d*\/$/.exec(line.trim());
      if (!m || m[1] === '0' || m[3] === '.' || m[3] === '..') continue;
      res.push({ name: m[3]!, dir: m[2]!.startsWith('04') });
    }
    return res;
  }

  private checkedClean = false;

  /**
   * Before the first read or write, replay the journal of a filesystem that still holds changes there (a VM killed
   * rather than shut down), as the guest's own mount would: debugfs writes in place and does not replay,
   * and the guest's replay at the next mount would put the journalled blocks back over what was written
   * here (seen: a script cut to its old length). The disk is the new VM's own (an overlay or a copy; the
   * template is never written), so replaying into it is what its next boot would do anyway. Refused when
   * the journal cannot be replayed.
   */
  private async replayJournalFirst(): Promise<void> {
    if (this.checkedClean) return;
    const needsRecovery = async () => /\bneeds_recovery\b/.test(/Filesystem features:\s*(.*)/.exec((await this.debugfs(['stats'], false)).stdout)?.[1] ?? '');
    if (await needsRecovery()) {
      // debugfs exits 0 and may clear the flag even when the replay failed: its error line is the verdict
      const r = await this.debugfs(['journal_run'], true);
      const why = r.stderr.split('\n').find((l) => /^journal_run: /.test(l))?.trim();
      if (why || (await needsRecovery())) {
        // leave the disk saying so (a failed journal_run may have cleared the flag): the refusal must hold
        // for the next edit too, and the guest's own fsck sees what it would have seen
        await this.debugfs(['feature needs_recovery'], true);
        throw new BadInputError(this.rawPath, `the ext4 journal needs recovery (the VM was not shut down cleanly) and replaying it failed${why ? ` (${why})` : ''}: boot and shut the VM down, or run e2fsck, before editing it offline`);
      }
    }
    this.checkedClean = true;
  }

  /** Write (create or replace) files, creating their directories; one debugfs run for all. */
  async writeFiles(files: { path: string; content: string | Buffer; mode?: number }[]): Promise<void> {
    await this.replayJournalFirst();
    const cmds: string[] = [];
    const dirs = new Set<string>();
    for (const f of files) {
      if (!f.path.startsWith('/') || f.path.includes('..') || /\s/.test(f.path)) throw new BadInputError(f.path, 'guest paths must be absolute, without spaces or ..');
      const parts = f.path.split('/').slice(1, -1);
      for (let i = 1; i <= parts.length; i++) {
        const d = '/' + parts.slice(0, i).join('/');
        if (!dirs.has(d)) {
          dirs.add(d);
          // never mkdir an existing directory: debugfs allocates an inode and a block before it finds
          // the name taken, and leaks them (e2fsck: bitmap differences)
          if (!(await this.exists(d))) cmds.push(`mkdir ${d}`);
        }
      }
      const host = join(this.tmp, `w${this.n++}`);
      writeFileSync(host, f.content);
      cmds.push(`rm ${f.path}`, `write ${host} ${f.path}`, `sif ${f.path} mode 0${(0o100000 | (f.mode ?? 0o644)).toString(8)}`);
    }
    const r = await this.debugfs(cmds, true);
    // rm of a missing file is expected; anything else is an error
    const errs = r.stderr
      .split('\n')
      .filter((l) => l.trim() && !/^debugfs \d/.test(l) && !/^rm: File not found/.test(l));
    if (errs.length) throw new ToolError('debugfs', `writing ${files.map((f) => f.path).join(', ')} in ${this.rawPath}: ${errs.join('; ')}`);
    for (const f of files) {
      const back = await this.readFile(f.path);
      if (!back || !back.equals(Buffer.from(f.content))) throw new ToolError('debugfs', `${f.path} did not read back as written in ${this.rawPath}`);
    }
    this.written.push(...files.map((f) => f.path));
  }

  /**
   * Make symbolic links (replacing what is at `path`), creating their directories. systemd needs these: it
   * ignores plain files in `*.wants/` (252: "is not a symlink, ignoring").
   */
  async symlinks(links: { path: string; target: string }[]): Promise<void> {
    await this.replayJournalFirst();
    const cmds: string[] = [];
    const dirs = new Set<string>();
    for (const l of links) {
      for (const p of [l.path, l.target]) {
        if (!p.startsWith('/') || p.includes('..') || /\s/.test(p)) throw new BadInputError(p, 'guest paths must be absolute, without spaces or ..');
      }
      const parts = l.path.split('/').slice(1, -1);
      for (let i = 1; i <= parts.length; i++) {
        const d = '/' + parts.slice(0, i).join('/');
        if (!dirs.has(d)) {
          dirs.add(d);
          if (!(await this.exists(d))) cmds.push(`mkdir ${d}`);
        }
      }
      cmds.push(`rm ${l.path}`, `symlink ${l.path} ${l.target}`);
    }
    const r = await this.debugfs(cmds, true);
    const errs = r.stderr.split('\n').filter((x) => x.trim() && !/^debugfs \d/.test(x) && !/^rm: File not found/.test(x));
    if (errs.length) throw new ToolError('debugfs', `linking ${links.map((l) => l.path).join(', ')} in ${this.rawPath}: ${errs.join('; ')}`);
    for (const l of links) {
      const got = await this.readLink(l.path);
      if (got !== l.target) throw new ToolError('debugfs', `${l.path} reads back as ${JSON.stringify(got)}, not a link to ${l.target}, in ${this.rawPath}`);
    }
    this.written.push(...links.map((l) => l.path));
  }

  /** The target of a symbolic link, or null when `path` is missing or not a link. */
  async readLink(path: string): Promise<string | null> {
    const r = await this.debugfs([`stat ${q(path)}`], false);
    if (/File not found|not found by ext2_lookup/.test(r.stderr) || !/Type: symlink/.test(r.stdout)) return null;
    // fast symlinks print `Fast link dest: "..."`; longer targets live in a data block
    const m = /Fast link dest: "(.*)"/.exec(r.stdout);
    if (m) return m[1]!;
    const b = await this.readFile(path);
    return b ? b.toString('utf8') : null;
  }

  dispose(): void {
    rmSync(this.tmp, { recursive: true, force: true });
  }
}

function q(p: string): string {
  return /[\s"]/.test(p) ? `"${p.replace(/"/g, '\\"')}"` : p;
}

/** 'qcow2' by its magic, else 'raw'. */
export function diskFormat(image: string): 'qcow2' | 'raw' {
  const fd = openSync(image, 'r');
  const b = Buffer.alloc(4);
  try {
    readSync(fd, b, 0, 4, 0);
  } finally {
    closeSync(fd);
  }
  return b.toString('latin1') === 'QFI\xfb' ? 'qcow2' : 'raw';
}

async function backingOf(image: string): Promise<string | undefined> {
  const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', image])).stdout) as { 'full-backing-filename'?: string; 'backing-filename'?: string };
  return info['full-backing-filename'] ?? info['backing-filename'];
}

/** A writable raw view of a qcow2 image through qemu-storage-daemon's FUSE export. */
async function fuseView(image: string, timeoutMs: number): Promise<{ path: string; release(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'ciel-edit-fuse-'));
  const mnt = join(dir, 'disk.raw');
  const pidfile = join(dir, 'qsd.pid');
  writeFileSync(mnt, '');
  const esc = (s: string) => s.replace(/,/g, ',,');
  const r = await execa(
    'qemu-storage-daemon',
    [
      '--blockdev', `driver=file,node-name=file0,filename=${esc(image)}`,
      '--blockdev', 'driver=qcow2,node-name=disk0,file=file0',
      '--export', `type=fuse,id=exp0,node-name=disk0,mountpoint=${esc(mnt)},writable=on`,
      '--daemonize', '--pidfile', pidfile,
    ],
    { reject: false, timeout: timeoutMs },
  );
  if (r.exitCode !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new ToolError('qemu-storage-daemon', String(r.stderr).trim() || `exit code ${r.exitCode}`);
  }
  const pid = Number((await readFile(pidfile, 'utf8')).trim());
  return {
    path: mnt,
    async release() {
      // SIGTERM: the daemon flushes the qcow2 (metadata, L2 tables), unmounts and exits
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        /* gone */
      }
      const until = performance.now() + timeoutMs;
      for (;;) {
        try {
          process.kill(pid, 0);
        } catch {
          break;
        }
        if (performance.now() > until) {
          process.kill(pid, 'SIGKILL');
          throw new ToolError('qemu-storage-daemon', `did not exit within ${timeoutMs} ms after SIGTERM (${image})`);
        }
        await sleep(10);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Raw copy of a qcow2 image; on release the edited copy becomes a new overlay on the same backing file. */
async function convertView(image: string): Promise<{ path: string; release(ok: boolean): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'ciel-edit-conv-'));
  const raw = join(dir, 'disk.raw');
  await execa('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', image, raw]);
  const backing = await backingOf(image);
  return {
    path: raw,
    async release(ok: boolean) {
      try {
        if (!ok) return;
        const out = join(dir, 'disk.qcow2');
        // with -B only what differs from the backing file is written into the new overlay
        const args = ['convert', '-f', 'raw', '-O', 'qcow2', ...(backing ? ['-B', backing, '-F', 'qcow2'] : []), raw, out];
        await execa('qemu-img', args);
        renameSync(out, image);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

export interface EditResult<T> {
  result: T;
  method: DiskEditMethod;
  ms: number;
}

/**
 * Open `image` (raw or qcow2) for offline editing, run `fn` with an editor, and close it (flushing the
 * overlay). The VM must not be running. method: default raw for raw images, fuse for qcow2 when
 * /dev/fuse exists (else convert).
 */
export async function editDisk<T>(
  image: string,
  fn: (ed: Ext4Editor) => Promise<T>,
  opts: { method?: 'fuse' | 'convert'; timeoutMs?: number } = {},
): Promise<EditResult<T>> {
  const t0 = performance.now();
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const fmt = diskFormat(image);
  const method: DiskEditMethod = fmt === 'raw' ? 'raw' : (opts.method ?? (existsSync('/dev/fuse') ? 'fuse' : 'convert'));
  let view: { path: string; release(ok: boolean): Promise<void> };
  if (method === 'raw') view = { path: image, release: async () => {} };
  else if (method === 'fuse') view = await fuseView(image, timeoutMs);
  else view = await convertView(image);
  const ed = new Ext4Editor(view.path);
  let ok = false;
  try {
    const result = await fn(ed);
    ok = true;
    return { result, method, ms: performance.now() - t0 };
  } finally {
    ed.dispose();
    await view.release(ok);
  }
}

export interface ContainerSelection {
  /** the containers this VM starts */
  containers: string[];
  /** the (first) container's address, CIDR */
  ip?: string;
  /** direct-routing VIP (the backend holds it on lo) */
  vip?: string;
}

/** The guest's boot-time selection files (guest.ts): /etc/ciel/containers.enabled and /etc/ciel/net. */
export function selectionFiles(sel: ContainerSelection): { path: string; content: string }[] {
  for (const c of sel.containers) if (!/^[A-Za-z0-9_.-]+$/.test(c)) throw new BadInputError(c, 'bad container name');
  const files = [{ path: '/etc/ciel/containers.enabled', content: sel.containers.join('\n') + '\n' }];
  const net = [sel.ip && `ip=${sel.ip}`, sel.vip && `vip=${sel.vip}`].filter(Boolean);
  files.push({ path: '/etc/ciel/net', content: net.length ? net.join('\n') + '\n' : '' });
  return files;
}

/** Write the container selection into a (stopped) VM's disk. */
export async function selectContainers(image: string, sel: ContainerSelection, opts: { method?: 'fuse' | 'convert' } = {}): Promise<EditResult<string[]>> {
  return editDisk(
    image,
    async (ed) => {
      const files = selectionFiles(sel);
      await ed.writeFiles(files);
      return files.map((f) => f.path);
    },
    opts,
  );
}

export interface DockerPolicyChange {
  id: string;
  name: string;
  from: string;
  to: string;
}

/**
 * Docker guests: set every container's restart policy so that only `keep` (names, with or without the
 * leading '/', or ids/id prefixes) start at boot: `always` for those, `no` for the others. Reads
 * config.v2.json for the name, rewrites hostconfig.json (other fields untouched).
 */
export async function setDockerRestartPolicies(ed: Ext4Editor, keep: string[], root = '/var/lib/docker'): Promise<DockerPolicyChange[]> {
  const dir = `${root}/containers`;
  const entries = await ed.list(dir);
  if (!entries) throw new BadInputError(ed.rawPath, `no ${dir} in the guest filesystem`);
  const wanted = (id: string, name: string) => keep.some((k) => k.replace(/^\//, '') === name || (k.length >= 12 && id.startsWith(k)));
  const changes: DockerPolicyChange[] = [];
  const writes: { path: string; content: string }[] = [];
  for (const e of entries.filter((x) => x.dir)) {
    const cfgRaw = await ed.readFile(`${dir}/${e.name}/config.v2.json`);
    const hcPath = `${dir}/${e.name}/hostconfig.json`;
    const hcRaw = await ed.readFile(hcPath);
    if (!cfgRaw || !hcRaw) continue;
    const cfg = parseGuestJson(cfgRaw, `${dir}/${e.name}/config.v2.json`) as { Name?: unknown; ID?: string };
    const hc = parseGuestJson(hcRaw, hcPath) as { RestartPolicy?: { Name?: string; MaximumRetryCount?: number } };
    if (cfg.Name !== undefined && typeof cfg.Name !== 'string') throw new BadInputError(`${dir}/${e.name}/config.v2.json`, 'Name is not a string');
    const name = ((cfg.Name as string | undefined) ?? '').replace(/^\//, '');
    const to = wanted(e.name, name) ? 'always' : 'no';
    const from = hc.RestartPolicy?.Name ?? '';
    changes.push({ id: e.name, name, from, to });
    if (from !== to) {
      hc.RestartPolicy = { Name: to, MaximumRetryCount: 0 };
      writes.push({ path: hcPath, content: JSON.stringify(hc) });
    }
  }
  if (writes.length) await ed.writeFiles(writes);
  return changes;
}

/** A JSON object from the guest's disk; anything else is the guest's fault, reported with the file. */
function parseGuestJson(raw: Buffer, file: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(raw.toString('utf8'));
  } catch (e) {
    throw new BadInputError(file, `not JSON: ${(e as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new BadInputError(file, 'not a JSON object');
  return v as Record<string, unknown>;
}

/** A systemd unit enabled offline: the `<target>.wants/<unit>` symlink systemctl enable would make. */
export function systemdWantsLink(unit: string, target: string, unitDir = '/lib/systemd/system'): { path: string; target: string } {
  for (const n of [unit, target]) if (!/^[A-Za-z0-9@_.:-]+\.(service|socket|timer|target|path|mount)$/.test(n)) throw new BadInputError(n, 'not a systemd unit name');
  return { path: `/etc/systemd/system/${target}.wants/${unit}`, target: `${unitDir}/${unit}` };
}

/** A drop-in for a unit (`/etc/systemd/system/<unit>.d/<name>.conf`): plain files are what systemd wants here. */
export function systemdDropIn(unit: string, name: string, content: string): { path: string; content: string } {
  if (!/^[A-Za-z0-9@_.:-]+\.(service|socket|timer|target|path|mount)$/.test(unit)) throw new BadInputError(unit, 'not a systemd unit name');
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw new BadInputError(name, 'bad drop-in name');
  return { path: `/etc/systemd/system/${unit}.d/${name}.conf`, content };
}

/**
 * Merge `settings` into Docker's /etc/docker/daemon.json (created when missing), e.g. the cgroup driver
 * (`exec-opts`). Other keys stay as they are.
 */
export async function mergeDockerDaemonConfig(ed: Ext4Editor, settings: Record<string, unknown>, path = '/etc/docker/daemon.json'): Promise<Record<string, unknown>> {
  const raw = await ed.readFile(path);
  const cfg = raw && raw.toString('utf8').trim() ? parseGuestJson(raw, path) : {};
  const merged = { ...cfg, ...settings };
  await ed.writeFiles([{ path, content: JSON.stringify(merged, null, 1) + '\n' }]);
  return merged;
}

export interface DockerCloneEdit {
  /** containers (names or ids) that keep `always`; all others get `no` */
  keep: string[];
  /** plain files to write, e.g. the VM's systemd-networkd `.network` file (its network identity) */
  files?: { path: string; content: string; mode?: number }[];
  /** symbolic links, e.g. systemdWantsLink(...) to enable a unit */
  links?: { path: string; target: string }[];
  /** settings merged into /etc/docker/daemon.json */
  daemon?: Record<string, unknown>;
}

/** The paper's scale-out edit of a (stopped) Docker VM's disk: restart policies, identity, units. */
export async function editDockerGuest(image: string, edit: DockerCloneEdit, opts: { method?: 'fuse' | 'convert' } = {}): Promise<EditResult<DockerPolicyChange[]>> {
  return editDisk(
    image,
    async (ed) => {
      const changes = await setDockerRestartPolicies(ed, edit.keep);
      if (edit.files?.length) await ed.writeFiles(edit.files);
      if (edit.links?.length) await ed.symlinks(edit.links);
      if (edit.daemon) await mergeDockerDaemonConfig(ed, edit.daemon);
      return changes;
    },
    opts,
  );
}
