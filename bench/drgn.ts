// The peer baseline for `ciel monitor`'s footprint: drgn (Debian's python3-drgn 0.0.22) reading the same
// per-container CPU and memory from a dump of the same paused guest. drgn needs the kernel's DWARF
// (vmlinux from the ~860 MB -dbg package that `ciel build` already downloaded for System.map) and
// opens only paging=true QEMU dumps; Ciel reads the paging=false ELF dump of the same paused state.
// The values of both must agree exactly: a baseline that read different numbers would not be a peer.
import { execa } from 'execa';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cacheDir } from '../common/cache.ts';
import { extractDebMember } from '../compiler/kernel/deb.ts';
import { cachedDeb } from '../compiler/kernel/packages.ts';
import { QmpClient } from '../vmi/qmp.ts';
import type { Guest } from '../testbed/guest/boot.ts';

const SCRIPT = fileURLToPath(new URL('./drgn-cgroups.py', import.meta.url));
const CIEL = fileURLToPath(new URL('../bin/ciel.mjs', import.meta.url));

export interface DrgnRow {
  drgnVersion: string;
  /** python start + import drgn + loading the core and the kernel's DWARF */
  drgnStartMs: number;
  drgnPeakRssMiB: number;
  drgnSampleMs: number;
  /** `ciel monitor --vmcore` as a process: start to its one sample printed */
  cielStartMs: number;
  cielPeakRssMiB: number;
  cielSampleMs: number;
  containers: number;
  /** containers whose CPU and memory differ between the two readers */
  mismatches: number;
}

/** vmlinux with DWARF, extracted once from the cached -dbg package. */
async function vmlinuxWithDwarf(release: string): Promise<string> {
  const out = join(cacheDir('kernels', release), `vmlinux-dwarf-${release}`);
  if (existsSync(out)) return out;
  const deb = cachedDeb(`linux-image-${release}-dbg`);
  if (!deb) throw new Error(`no cached linux-image-${release}-dbg package: run \`ciel build --kernel ${release}\` first`);
  await extractDebMember(deb, `./usr/lib/debug/boot/vmlinux-${release}`, out);
  return out;
}

async function timedPeak(cmd: string, args: string[]): Promise<{ stdout: string; ms: number; peakMiB: number }> {
  const t0 = performance.now();
  const r = await execa('/usr/bin/time', ['-f', '%M', cmd, ...args], { reject: false, timeout: 600_000 });
  const ms = performance.now() - t0;
  if (r.exitCode !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.exitCode}): ${r.stderr.slice(-2000)}`);
  const peakKiB = Number(r.stderr.trim().split('\n').pop());
  return { stdout: r.stdout, ms, peakMiB: Math.round((peakKiB / 1024) * 10) / 10 };
}

export async function benchDrgn(guest: Guest, release: string): Promise<DrgnRow> {
  if (!existsSync('/usr/bin/python3') || (await execa('/usr/bin/python3', ['-c', 'import drgn'], { reject: false })).exitCode !== 0)
    throw new Error('python3-drgn is not installed (apt-get install python3-drgn)');
  const vmlinux = await vmlinuxWithDwarf(release);
  const paged = join(guest.runDir, 'drgn.core');
  const plain = join(guest.runDir, 'ciel.core');
  const qmp = await QmpClient.connect(guest.qmpSocket);
  try {
    await qmp.stop();
    try {
      await qmp.execute('dump-guest-memory', { paging: true, protocol: `file:${paged}` }, 300_000);
      await qmp.execute('dump-guest-memory', { paging: false, protocol: `file:${plain}`, format: 'elf' }, 300_000);
    } finally {
      await qmp.cont();
    }
  } finally {
    qmp.close();
  }
  try {
    const d = await timedPeak('/usr/bin/python3', [SCRIPT, vmlinux, paged, '20']);
    const dj = JSON.parse(d.stdout) as {
      drgn_version: string; import_ms: number; load_ms: number; sample_ms_median: number; peak_rss_mib: number;
      containers: Record<string, { cpu_usage_ns: number; memory_usage_bytes: number }>;
    };
    const c = await timedPeak(process.execPath, [CIEL, 'monitor', '--vmcore', plain, '--kernel', release, '--json']);
    const cj = JSON.parse(c.stdout.trim().split('\n')[0]) as { sample_us: number; containers: { id: string; cpu_usage_ns: number; memory_usage_bytes: number }[] };
    let mismatches = 0;
    for (const x of cj.containers) {
      const y = dj.containers[x.id];
      if (!y || BigInt(y.cpu_usage_ns) !== BigInt(x.cpu_usage_ns) || BigInt(y.memory_usage_bytes) !== BigInt(x.memory_usage_bytes)) mismatches++;
    }
    if (Object.keys(dj.containers).length !== cj.containers.length) mismatches += Math.abs(Object.keys(dj.containers).length - cj.containers.length);
    return {
      drgnVersion: dj.drgn_version,
      drgnStartMs: Math.round(d.ms - dj.sample_ms_median * 21),
      drgnPeakRssMiB: d.peakMiB,
      drgnSampleMs: dj.sample_ms_median,
      cielStartMs: Math.round(c.ms - cj.sample_us / 1000),
      cielPeakRssMiB: c.peakMiB,
      cielSampleMs: Math.round(cj.sample_us) / 1000,
      containers: cj.containers.length,
      mismatches,
    };
  } finally {
    rmSync(paged, { force: true });
    rmSync(plain, { force: true });
  }
}
