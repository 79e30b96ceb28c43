// Benchmark: one full sample (all containers: CPU, memory, io, net, pids) read from outside a real
// guest, for 1, 10 and 100 containers, next to the conventional in-guest way (cAdvisor-style reads of
// the same numbers from cgroupfs files), measured natively on this host with the same number of
// cgroups in the host's v1 hierarchies (the TCG guest's own timing would be slowed by emulation).
// The guest runs one Debian kernel (default 6.1.0-56-amd64); `--kernel RELEASE|LINE[,...]` or
// CIEL_BENCH_KERNEL picks others (a line name — 5.10, 6.1, 6.12, 7.x, or `all` — means the release the
// build bench and the live accuracy test use for it), one guest after the other, with a summary table.
import { mkdirSync, readFileSync, rmdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { buildMonitor } from '../compiler/build.ts';
import { parseRelease } from '../compiler/kernel/release.ts';
import type { QemuLiveBackend } from '../vmi/backends/qemu-live.ts';
import { VmSession } from '../vmi/session.ts';
import { bootGuest } from '../testbed/guest/boot.ts';
import { guestKernel } from '../testbed/guest/kernel.ts';
import { BENCH_RELEASES } from './build.ts';

const DEFAULT_RELEASE = '6.1.0-56-amd64';
const COUNTS = [1, 10, 100];
const RUNS = 50;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const p90 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.9)];
const hexId = (i: number) => i.toString(16).padStart(64, '0');

/** The same numbers a cAdvisor-style agent reads for one container from cgroup v1 files. */
function readCgroupfs(dirs: { cpuacct: string; memory: string; blkio: string; pids: string }): number {
  let bytes = 0;
  for (const f of [
    join(dirs.cpuacct, 'cpuacct.usage'),
    join(dirs.memory, 'memory.usage_in_bytes'),
    join(dirs.memory, 'memory.stat'),
    join(dirs.blkio, 'blkio.throttle.io_service_bytes'),
    join(dirs.pids, 'pids.current'),
    '/proc/self/net/dev', // the container's netns view of its devices
  ]) {
    bytes += readFileSync(f, 'latin1').length;
  }
  return bytes;
}

export interface MonitorBenchRow {
  release: string;
  containers: number;
  outsideUs: number;
  outsideP90Us: number;
  cgroupfsUs: number;
  ratio: number;
  tlbHit: number;
  pages: number;
  accesses: number;
}

/** `5.10,7.3.4+deb13-amd64` -> releases: a line name (or `all`) means that line's bench release. */
export function benchKernels(spec: string | undefined): string[] {
  if (!spec) return [DEFAULT_RELEASE];
  const out: string[] = [];
  for (const item of spec.split(',').map((s) => s.trim()).filter(Boolean)) {
    if (item === 'all') out.push(...BENCH_RELEASES);
    else {
      const byLine = BENCH_RELEASES.find((r) => parseRelease(r).line === item);
      out.push(byLine ?? parseRelease(item).release); // parseRelease refuses what is neither
    }
  }
  return [...new Set(out)];
}

/** One guest per release, one after the other; with more than one, a per-line summary at the end. */
export async function benchMonitorKernels(releases: string[], log: (s: string) => void = console.log): Promise<MonitorBenchRow[]> {
  const rows: MonitorBenchRow[] = [];
  for (const release of releases) {
    rows.push(...(await benchMonitor(log, release)));
    log('');
  }
  if (releases.length > 1) {
    log('monitor, per kernel line: one full sample from outside (guest paused), median / p90 us, vs the cgroupfs files on this host');
    log(`| line | release | ${COUNTS.map((n) => `${n} ctr median / p90`).join(' | ')} | ${COUNTS.map((n) => `cgroupfs ${n}`).join(' | ')} |`);
    log(`|---|---|${COUNTS.map(() => '---|').join('')}${COUNTS.map(() => '---|').join('')}`);
    for (const release of releases) {
      const of = (n: number) => rows.find((r) => r.release === release && r.containers === n)!;
      log(`| ${parseRelease(release).line} | ${release} | ${COUNTS.map((n) => `${of(n).outsideUs} / ${of(n).outsideP90Us}`).join(' | ')} | ${COUNTS.map((n) => of(n).cgroupfsUs).join(' | ')} |`);
    }
  }
  return rows;
}

export async function benchMonitor(log: (s: string) => void = console.log, release = DEFAULT_RELEASE): Promise<MonitorBenchRow[]> {
  await buildMonitor({ release });
  // the default kernel is the guest's own default (cached by the guest build); others fetched (cached)
  const kernel = release === DEFAULT_RELEASE ? undefined : await guestKernel(release);
  const guest = await bootGuest({ bare: true, name: `bench-monitor-${process.pid}`, kernel });
  const hostBase = `ciel-bench-${process.pid}`;
  const hostDirs: string[] = [];
  const rows: MonitorBenchRow[] = [];
  const session = await VmSession.open({ name: 'bench', backend: 'qemu', qmp: guest.qmpSocket, memory: guest.memFile, kernel: release });
  const backend = session.backend as QemuLiveBackend;
  const monitor = session.monitor;
  try {
    let created = 0;
    for (const n of COUNTS) {
      // guest: n containers laid out as Docker's cgroupfs driver does, each with its own netns and veth
      const script = [];
      for (let i = created + 1; i <= n; i++) {
        const cg = `/sys/fs/cgroup/docker/${hexId(i)}`;
        script.push(
          `mkdir ${cg}; sh -c 'echo $$ > ${cg}/cgroup.procs; exec unshare -n sleep 1000000' </dev/null >/dev/null 2>&1 & p=$!; ` +
            `while [ "$(readlink /proc/$p/ns/net)" = "$(readlink /proc/1/ns/net)" ]; do sleep 0.02; done; ` +
            `/sbin/ip link add b${i} type veth peer name eth0 netns $p`,
        );
      }
      // the guest's command channel takes one line per command: a few containers per line
      for (let k = 0; k < script.length; k += 5) {
        const r = await guest.sh(script.slice(k, k + 5).join('; ') + '; echo created', 300_000);
        if (!r.output.includes('created')) throw new Error(`creating containers failed: ${r.output.slice(-500)}`);
      }
      created = n;

      // outside: the guest paused, so QEMU's emulation threads do not compete for the 2 cores
      await backend.pause();
      const times: number[] = [];
      let last = monitor.sample();
      try {
        for (let r = 0; r < RUNS; r++) {
          const t0 = performance.now();
          last = monitor.sample();
          times.push((performance.now() - t0) * 1000);
        }
      } finally {
        await backend.resume();
      }
      if (last.containers.length !== n) throw new Error(`expected ${n} containers, sampled ${last.containers.length}`);
      const st = monitor.lastStats!;

      // native: the same number of cgroups in this host's v1 hierarchies, read file by file
      const ctrls = ['cpuacct', 'memory', 'blkio', 'pids'] as const;
      while (hostDirs.length < n) {
        const i = hostDirs.length;
        for (const c of ctrls) mkdirSync(join('/sys/fs/cgroup', c, hostBase, `c${i}`), { recursive: true });
        hostDirs.push(`c${i}`);
      }
      const dirsOf = (d: string) =>
        Object.fromEntries(ctrls.map((c) => [c, join('/sys/fs/cgroup', c, hostBase, d)])) as Record<(typeof ctrls)[number], string>;
      const nativeTimes: number[] = [];
      for (let r = 0; r < RUNS; r++) {
        const t0 = performance.now();
        for (const d of hostDirs.slice(0, n)) readCgroupfs(dirsOf(d));
        nativeTimes.push((performance.now() - t0) * 1000);
      }
      const row: MonitorBenchRow = {
        release,
        containers: n,
        outsideUs: Math.round(median(times)),
        outsideP90Us: Math.round(p90(times)),
        cgroupfsUs: Math.round(median(nativeTimes)),
        ratio: Math.round((median(times) / median(nativeTimes)) * 100) / 100,
        tlbHit: Math.round(st.tlbHitRatio * 10000) / 100,
        pages: st.pages,
        accesses: st.accesses,
      };
      rows.push(row);
    }
  } finally {
    await session.close();
    await guest.stop();
    for (const d of hostDirs) for (const c of ['cpuacct', 'memory', 'blkio', 'pids']) rmdirSync(join('/sys/fs/cgroup', c, hostBase, d));
    for (const c of ['cpuacct', 'memory', 'blkio', 'pids']) if (existsSync(join('/sys/fs/cgroup', c, hostBase))) rmdirSync(join('/sys/fs/cgroup', c, hostBase));
  }
  log(`monitor (${release}): one full sample (CPU, memory, rss/cache, io, net, pids of every container), guest paused, median of ${RUNS}`);
  log('| containers | outside (Ciel) us | p90 us | cgroupfs files on this host us | Ciel / cgroupfs | TLB hit % | pages touched | guest accesses |');
  log('|---|---|---|---|---|---|---|---|');
  for (const r of rows) log(`| ${r.containers} | ${r.outsideUs} | ${r.outsideP90Us} | ${r.cgroupfsUs} | ${r.ratio} | ${r.tlbHit} | ${r.pages} | ${r.accesses} |`);
  const r100 = rows.find((r) => r.containers === 100)!;
  log(`target: <= 1 ms for 100 containers and faster than cgroupfs -> ${r100.outsideUs <= 1000 && r100.ratio < 1 ? 'met' : 'NOT met'} (${r100.outsideUs} us, ${r100.ratio}x)`);
  return rows;
}
