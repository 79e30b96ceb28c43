// Where a running libvirt domain's guest RAM is on this host: its QEMU process (libvirt's pid file, checked
// against QEMU's `-name guest=DOMAIN`) and, in that process's /proc/<pid>/maps, the one shared mapping of
// the guest's RAM size. libvirt writes it for `<memoryBacking><source type='file'/><access mode='shared'/>`
// (a file under memory_backing_dir, /var/lib/libvirt/qemu/ram/ by default, or /dev/shm) and for
// `<source type='memfd'/>` (no path: mapped through /proc/<pid>/fd/<n>). libvirt's default is private
// anonymous RAM, which no other process can map: that is a LibvirtDomainError saying which XML to add.
import { readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { VmError } from '../common/errors.ts';
import type { QemuMachine } from './backends/qemu-live.ts';

/** A libvirt domain cannot be read (unknown, not running, remote, RAM not shared): names the VM, domain and URI. */
export class LibvirtDomainError extends VmError {
  constructor(
    vm: string,
    readonly domain: string,
    readonly uri: string,
    detail: string,
  ) {
    super(vm, `libvirt domain ${domain} (${uri}): ${detail}`);
  }
}

export interface DomainRam {
  pid: number;
  /** the process's start time (/proc/<pid>/stat field 22): a pid reused by another process differs */
  startTime: string;
  /** the path to map read-only: the backing file, or /proc/<pid>/fd/<n> for memfd or a deleted file */
  path: string;
  /** what /proc/<pid>/maps calls it (for messages) */
  mapped: string;
  ramBytes: bigint;
  machine: QemuMachine;
}

export const SHARED_MEMORY_XML = "<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>";

/** `virsh -c URI args...`: stdout, or the error virsh printed. */
export async function virsh(uri: string, args: string[], timeoutMs = 10_000): Promise<{ ok: boolean; out: string; err: string }> {
  const r = await execa('virsh', ['-c', uri, ...args], { reject: false, timeout: timeoutMs });
  const err = r.timedOut ? `no answer within ${timeoutMs} ms` : (r.failed && r.exitCode === undefined ? r.message : r.stderr.trim().replace(/^error: /gm, '')) ?? '';
  return { ok: !r.failed, out: r.stdout ?? '', err };
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks), or null when there is no such process. */
export function processStartTime(pid: number): string | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const st = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return st[0] === 'Z' || st[0] === 'X' ? null : (st[19] ?? null);
  } catch {
    return null;
  }
}

/** True when `pid` is the QEMU libvirt started for `domain` (`-name guest=DOMAIN,...`). */
function isDomainQemu(pid: number, domain: string): boolean {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    const i = argv.indexOf('-name');
    return i >= 0 && (argv[i + 1] ?? '').split(',').includes(`guest=${domain}`);
  } catch {
    return false;
  }
}

function qemuPid(domain: string, uri: string): number | null {
  // the system daemon's pid files, then the session daemon's; else any QEMU named for the domain
  const files = [`/run/libvirt/qemu/${domain}.pid`, join(process.env.XDG_RUNTIME_DIR ?? join(homedir(), '.cache'), 'libvirt', 'qemu', 'run', `${domain}.pid`)];
  for (const f of uri.includes('/session') ? files.reverse() : files) {
    try {
      const pid = Number(readFileSync(f, 'utf8').trim());
      if (Number.isInteger(pid) && pid > 0 && isDomainQemu(pid, domain)) return pid;
    } catch {
      /* not this daemon's */
    }
  }
  for (const e of readdirSync('/proc')) if (/^\d+$/.test(e) && isDomainQemu(Number(e), domain)) return Number(e);
  return null;
}

const UNITS: Record<string, bigint> = { b: 1n, bytes: 1n, k: 1024n, kib: 1024n, kb: 1000n, m: 1n << 20n, mib: 1n << 20n, mb: 1000_000n, g: 1n << 30n, gib: 1n << 30n, gb: 1000_000_000n };

/** RAM size, machine type and memory backing from a domain's XML (libvirt's normalised `dumpxml`). */
export function parseDomainXml(xml: string): { ramBytes: bigint | null; machine: QemuMachine; backing: string } {
  const m = /<memory(?:\s+unit='(\w+)')?>(\d+)<\/memory>/.exec(xml);
  const unit = UNITS[(m?.[1] ?? 'KiB').toLowerCase()];
  const ramBytes = m && unit ? BigInt(m[2]!) * unit : null;
  const machine: QemuMachine = /machine='[^']*q35[^']*'/.test(xml) ? 'q35' : 'pc';
  const mb = /<memoryBacking>([\s\S]*?)<\/memoryBacking>/.exec(xml)?.[1] ?? '';
  const source = /<source\s+type='(\w+)'/.exec(mb)?.[1];
  const access = /<access\s+mode='(\w+)'/.exec(mb)?.[1];
  const backing = source ? `<source type='${source}'/>${access ? ` <access mode='${access}'/>` : ' (no <access mode=\'shared\'/>)'}` : mb.trim() ? 'no <source> in <memoryBacking>' : 'no <memoryBacking>';
  return { ramBytes, machine, backing };
}

interface MapsLine {
  size: bigint;
  shared: boolean;
  inode: number;
  path: string;
}

function mapsLines(pid: number): MapsLine[] {
  return readFileSync(`/proc/${pid}/maps`, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [range, perms, , , inode, ...rest] = l.split(/\s+/);
      const [a, b] = range!.split('-');
      return { size: BigInt(`0x${b}`) - BigInt(`0x${a}`), shared: perms![3] === 's', inode: Number(inode), path: rest.join(' ') };
    });
}

/** An fd of `pid` open on the mapped file (memfd or deleted file): /proc/<pid>/fd/<n>. */
function fdPathFor(pid: number, m: MapsLine): string | null {
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    const p = `/proc/${pid}/fd/${fd}`;
    try {
      if (readlinkSync(p) === m.path && statSync(p).ino === m.inode) return p;
    } catch {
      /* closed meanwhile */
    }
  }
  return null;
}

/**
 * Find a running domain's QEMU and guest RAM. `vm` names the VM in errors. Every failure is a
 * LibvirtDomainError: remote URI, unknown or stopped domain, no QEMU process here, RAM not shared.
 */
export async function locateDomainRam(vm: string, domain: string, uri: string): Promise<DomainRam> {
  const fail = (detail: string): never => {
    throw new LibvirtDomainError(vm, domain, uri, detail);
  };
  // a remote connection can give commands but not the RAM: Ciel maps it, so it runs on the domain's host
  const host = /^[\w+.-]+:\/\/([^/?]*)/.exec(uri)?.[1];
  if (host) fail(`the URI names a remote host (${host}): ciel maps the guest's RAM, so run it on the host of the domain`);
  const st = await virsh(uri, ['domstate', domain]);
  if (!st.ok) fail(/failed to get domain|not found/i.test(st.err) ? `no such domain (virsh: ${st.err})` : `virsh domstate failed: ${st.err}`);
  const state = st.out.trim();
  if (state !== 'running' && state !== 'paused') fail(`the domain is ${state}: start it first`);
  const xml = await virsh(uri, ['dumpxml', domain]);
  if (!xml.ok) fail(`virsh dumpxml failed: ${xml.err}`);
  const { ramBytes, machine, backing } = parseDomainXml(xml.out);
  if (!ramBytes) fail('no <memory> in its XML');
  const pid = qemuPid(domain, uri) ?? fail('no QEMU process of this domain on this host (-name guest=...)');
  const startTime = processStartTime(pid) ?? fail(`QEMU (pid ${pid}) exited`);
  let maps: MapsLine[];
  try {
    maps = mapsLines(pid).filter((m) => m.size === ramBytes);
  } catch (e) {
    return fail(`cannot read /proc/${pid}/maps (${(e as Error).message}): run ciel as root`);
  }
  const shared = maps.filter((m) => m.shared && m.path !== '' && m.inode !== 0);
  if (shared.length === 0) {
    const priv = maps.find((m) => !m.shared);
    const what = !priv
      ? `QEMU (pid ${pid}) maps no ${ramBytes} bytes of guest RAM`
      : priv.path === ''
        ? 'its RAM is private anonymous memory (libvirt\'s default), which no other process can read'
        : `its RAM is a private (copy-on-write) mapping of ${priv.path}`;
    fail(`${what} (memory backing: ${backing}). Add ${SHARED_MEMORY_XML} (or <source type='file'/>) to the domain's XML (virsh edit ${domain}) and start it again`);
  }
  if (shared.length > 1) fail(`QEMU (pid ${pid}) has ${shared.length} shared mappings of ${ramBytes} bytes (${shared.map((m) => m.path).join(', ')}): which is the RAM is unclear`);
  const m = shared[0]!;
  let path: string | null = null;
  try {
    if (!m.path.endsWith(' (deleted)') && statSync(m.path).ino === m.inode) path = m.path;
  } catch {
    /* not reachable by its name: through the fd */
  }
  path ??= fdPathFor(pid, m) ?? fail(`its RAM (${m.path}) has no file name and QEMU holds no descriptor for it`);
  return { pid, startTime, path, mapped: m.path, ramBytes: ramBytes!, machine };
}
