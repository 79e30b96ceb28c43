// Warm start on the real Docker guest (paper 002, Kaleidoscope: restoring a booted VM's memory beats
// booting it): a booted minimal clone (only web running, answering) is saved with QMP `migrate` to a file,
// and new VMs are restored from that file with `-incoming`, then given their own identity over the
// control channel (MAC, address, VIP on lo, clock).
//
// A memory image is only valid on top of the disk state it was saved with: the guest's page cache, ext4's
// journal position and Docker's open files refer to it. So the saved VM's overlay becomes the image's
// frozen disk (read-only, next to the memory file), and every restore gets a fresh qcow2 overlay backed
// by that frozen disk — never by the template.
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cacheDir } from '../../common/cache.ts';
import { BadFieldError, ToolError } from '../../common/errors.ts';
import { run } from '../guest-images.ts';
import { answers, bootDockerGuest, controlQmp, dockerMachine, waitAnswering, type DockerBootOptions, type DockerGuest, type DockerMachine } from './boot.ts';
import type { DockerClone } from './clone.ts';
import { ARP_SYSCTL_PATH, directRoutingFiles } from './direct-routing.ts';
import { NETWORK_FILE_PATH, networkFile } from './recipe.ts';

/** A saved memory image of a booted minimal Docker VM and the disk it belongs to. */
export interface WarmDockerImage {
  /** QEMU's migration stream */
  memFile: string;
  /** the saved VM's disk as it was at the save: read-only, backing file of every restore's overlay */
  frozenDisk: string;
  /** this record as JSON, next to both */
  metaFile: string;
  /** what a restore must match */
  machine: DockerMachine;
  /** kernel and initramfs as they were at the save (a restore refuses changed files) */
  files: { vmlinuz: FileStamp; initrd: FileStamp };
  savedFrom: { name: string; address?: string };
  bytes: number;
  save_ms: number;
}

interface FileStamp {
  size: number;
  mtimeMs: number;
}

/** A restore asked for a machine other than the saved one (QEMU would fail, or the guest would break). */
export class WarmImageMismatchError extends BadFieldError {
  constructor(
    readonly vm: string,
    metaFile: string,
    field: string,
    saved: unknown,
    asked: unknown,
  ) {
    super(metaFile, field, `VM ${vm} asks ${JSON.stringify(asked)}, the image was saved with ${JSON.stringify(saved)}`);
  }
}

const stamp = (f: string): FileStamp => {
  const s = statSync(f);
  return { size: s.size, mtimeMs: s.mtimeMs };
};

/**
 * Save a booted clone as a warm image in `dir` (memory.img, disk.qcow2, image.json). The clone's QEMU
 * is stopped afterwards and its overlay becomes the frozen disk: the clone is used up.
 */
export async function saveWarmImage(clone: Pick<DockerClone, 'guest' | 'overlay'>, dir: string, o: { timeoutMs?: number; log?: (m: string) => void } = {}): Promise<WarmDockerImage> {
  const g = clone.guest;
  if (!g.alive()) throw new ToolError('qemu', `guest ${g.name} is not running: nothing to save`);
  mkdirSync(dir, { recursive: true });
  const memFile = join(dir, 'memory.img');
  const frozenDisk = join(dir, 'disk.qcow2');
  const metaFile = join(dir, 'image.json');
  for (const f of [memFile, frozenDisk, metaFile]) rmSync(f, { force: true });
  const timeoutMs = o.timeoutMs ?? 300_000;
  // written-back data lands on the frozen disk rather than in the image's dirty page cache
  await g.must('sync', 120_000);
  const t0 = performance.now();
  try {
    await controlQmp(g, async (q) => {
    // QEMU 7.2 throttles migration to 128 MiB/s by default; a file is not a network
      await q.execute('migrate-set-parameters', { 'max-bandwidth': 8 * 2 ** 30 });
      await q.execute('migrate', { uri: `exec:cat > '${memFile.replace(/'/g, `'\\''`)}'` });
      for (;;) {
        const m = await q.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
        if (m.status === 'completed') return;
        if (m.status === 'failed' || m.status === 'cancelled') throw new ToolError('qemu', `${g.name}: migrate to ${memFile}: ${m.status} ${m['error-desc'] ?? ''}`);
        if (performance.now() > t0 + timeoutMs) throw new ToolError('qemu', `${g.name}: migrate to ${memFile} did not complete within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 50));
      }
    });
  } catch (e) {
    rmSync(memFile, { force: true });
    throw e;
  }
  const save_ms = performance.now() - t0;
  // the source is paused after a completed migration and its disk flushed: stop it, keep its overlay
  await g.stop();
  try {
    renameSync(clone.overlay, frozenDisk);
  } catch {
    copyFileSync(clone.overlay, frozenDisk); // another filesystem
    rmSync(clone.overlay, { force: true });
  }
  chmodSync(frozenDisk, 0o444);
  chmodSync(memFile, 0o444);
  const image: WarmDockerImage = {
    memFile,
    frozenDisk,
    metaFile,
    machine: g.machine,
    files: { vmlinuz: stamp(g.machine.vmlinuz), initrd: stamp(g.machine.initrd) },
    savedFrom: { name: g.name, address: g.options.address },
    bytes: statSync(memFile).size,
    save_ms,
  };
  writeFileSync(metaFile, JSON.stringify(image, null, 2) + '\n');
  o.log?.(`[warm] ${g.name} saved: ${(image.bytes / 2 ** 20).toFixed(0)} MiB of memory in ${(save_ms / 1000).toFixed(1)} s; its disk frozen at ${frozenDisk}`);
  return image;
}

/** A warm image saved earlier, from its image.json. */
export function loadWarmImage(dir: string): WarmDockerImage {
  const metaFile = join(dir, 'image.json');
  const image = JSON.parse(readFileSync(metaFile, 'utf8')) as WarmDockerImage;
  for (const f of [image.memFile, image.frozenDisk]) if (!existsSync(f)) throw new BadFieldError(metaFile, f === image.memFile ? 'memFile' : 'frozenDisk', `${f} is missing`);
  return image;
}

export interface WarmStartOptions {
  name: string;
  /** CIDR for eth0 */
  address: string;
  /** direct-routing VIP: the VM gets the same files a cold clone behind IPVS gets (direct-routing.ts) */
  vip?: string;
  /** a private L2 segment (bootDockerGuest's `network`; its NIC arguments carry the MAC) */
  network?: { wrapper: string[]; nicArgs: string[] };
  /** this VM's MAC (the NIC's MAC comes back from the snapshot: the guest is told the new one) */
  mac: string;
  /** the machine asked for; must be the saved one (default: the saved one) */
  memMiB?: number;
  smp?: number;
  /** web answers at the new address (default: through QEMU's forwarded port on the user network) */
  webAnswers?: (g: DockerGuest) => Promise<boolean>;
  /** give up when web has not answered this long after QEMU started; default 300 000 ms */
  readyTimeoutMs?: number;
  log?: (m: string) => void;
}

export interface WarmStarted {
  guest: DockerGuest;
  overlay: string;
  /** ms: overlay made / QEMU start to the guest running / running to the identity fixed /
   *  QEMU start to web answering at the new address (restore + fix-up + web's first answer) */
  times: { clone_ms: number; restore_ms: number; fixup_ms: number; boot_ms: number };
  stop(): Promise<void>;
}

/** Refuse (before any QEMU starts) a restore onto a machine other than the saved one. */
export function checkMachine(image: WarmDockerImage, vm: string, boot: DockerBootOptions): void {
  const asked = dockerMachine(boot);
  for (const k of Object.keys(image.machine) as (keyof DockerMachine)[]) {
    if (asked[k] !== image.machine[k]) throw new WarmImageMismatchError(vm, image.metaFile, `machine.${k}`, image.machine[k], asked[k]);
  }
  for (const k of ['vmlinuz', 'initrd'] as const) {
    const f = image.machine[k];
    const now = existsSync(f) ? stamp(f) : undefined;
    if (!now || now.size !== image.files[k].size || now.mtimeMs !== image.files[k].mtimeMs) throw new WarmImageMismatchError(vm, image.metaFile, `files.${k}`, image.files[k], now ?? 'missing');
  }
}

/** Restore a new VM from a warm image and give it its own identity; ready when web answers at its address. */
export async function warmStart(image: WarmDockerImage, o: WarmStartOptions): Promise<WarmStarted> {
  const boot: DockerBootOptions = {
    name: o.name,
    disk: '',
    vmlinuz: image.machine.vmlinuz,
    initrd: image.machine.initrd,
    cgroup: image.machine.cmdline.includes('systemd.unified_cgroup_hierarchy=0') ? 'v1' : 'v2',
    memMiB: o.memMiB ?? image.machine.memMiB,
    smp: o.smp ?? image.machine.smp,
    address: o.address,
    network: o.network,
    mac: o.network ? undefined : o.mac,
    incoming: `exec:cat '${image.memFile.replace(/'/g, `'\\''`)}'`,
    readyTimeoutMs: o.readyTimeoutMs,
    log: o.log,
  };
  checkMachine(image, o.name, boot);
  const t0 = performance.now();
  const dir = cacheDir('docker-guest', 'clones');
  mkdirSync(dir, { recursive: true });
  const overlay = join(dir, `${o.name}.qcow2`);
  rmSync(overlay, { force: true });
  run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', image.frozenDisk, '-F', 'qcow2', overlay]);
  const clone_ms = performance.now() - t0;
  let guest: DockerGuest | undefined;
  try {
    guest = await bootDockerGuest({ ...boot, disk: overlay });
    const g = guest;
    const running = g.t0 + g.restoredMs!;
    await g.must(identityScript(o), 120_000);
    const fixed = performance.now();
    const timeoutMs = o.readyTimeoutMs ?? 300_000;
    const probe = o.webAnswers ?? ((x: DockerGuest) => answers(x, 'web'));
    const answered = await waitAnswering(g, () => probe(g), { deadline: g.t0 + timeoutMs, what: `web at ${o.address}`, intervalMs: 100 });
    const times = { clone_ms, restore_ms: g.restoredMs!, fixup_ms: fixed - running, boot_ms: answered - g.t0 };
    o.log?.(`[warm] ${o.name} restored in ${(times.restore_ms / 1000).toFixed(1)} s, identity fixed in ${(times.fixup_ms / 1000).toFixed(1)} s, web answering at ${o.address} ${(times.boot_ms / 1000).toFixed(1)} s after QEMU started`);
    return {
      guest: g,
      overlay,
      times,
      async stop() {
        await g.stop();
        rmSync(overlay, { force: true });
      },
    };
  } catch (e) {
    await guest?.stop();
    rmSync(overlay, { force: true });
    throw e;
  }
}

/**
 * The shell script that turns a restored copy into this VM: its MAC, the same network files a cold
 * clone's disk gets (applied by networkd, which then drops the saved address), the VIP and ARP settings
 * when behind IPVS, and the clock (the guest's wall clock resumes where the image stopped it).
 */
export function identityScript(o: Pick<WarmStartOptions, 'mac' | 'address' | 'vip'>): string {
  const files = o.vip ? directRoutingFiles(o.address, o.vip) : [{ path: NETWORK_FILE_PATH, content: networkFile(o.address) }];
  const wantEth0 = `${o.address} `;
  const lines = [
    'set -e',
    `ip link set dev eth0 address ${o.mac}`,
    ...files.map((f) => `echo ${Buffer.from(f.content).toString('base64')} | base64 -d > ${f.path}`),
    ...(o.vip ? [`sysctl -q -p ${ARP_SYSCTL_PATH}`] : []),
    `date -s @${(Date.now() / 1000).toFixed(3)} >/dev/null`,
    'ip neigh flush all',
    'networkctl reload',
    `networkctl reconfigure eth0${o.vip ? ' lo' : ''}`,
    // networkd applies it asynchronously: wait for exactly the new address on eth0 (and the VIP on lo)
    'i=0',
    `until [ "$(ip -4 -o addr show dev eth0 | awk '{printf "%s ", $4}')" = "${wantEth0}" ]${o.vip ? ` && ip -4 -o addr show dev lo | grep -q ' ${o.vip}/32 '` : ''}; do`,
    '  i=$((i+1)); if [ $i -gt 300 ]; then echo "eth0 after 30 s: $(ip -4 -o addr show dev eth0)"; exit 1; fi; sleep 0.1',
    'done',
  ];
  return lines.join('\n');
}
