// Benchmark: what `ciel monitor` costs the host while it runs as a daemon. A bare test guest gets
// 100 containers (Docker's cgroupfs layout, each in its own network namespace with a veth), then the
// real CLI samples it as a subprocess at 1 Hz and at 10 Hz; the CPU it uses is read from
// /proc/<pid>/stat (utime + stime) over a ~20 s window after start-up, its memory from /proc/<pid>/status.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildMonitor } from '../compiler/build.ts';
import { bootGuest, type Guest } from '../testbed/guest/boot.ts';
import { benchDrgn, type DrgnRow } from './drgn.ts';

const RELEASE = '6.1.0-56-amd64';
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const CONTAINERS = 100;
const WINDOW_S = Number(process.env.CIEL_OVERHEAD_WINDOW_S ?? 20);
const WARMUP_S = 3;
/** USER_HZ: the unit of utime/stime in /proc/<pid>/stat (100 on every Linux/x86-64 distribution kernel) */
const CLK_TCK = 100;

export interface OverheadRow {
  mode: string;
  rateHz: number;
  containers: number;
  cpuPercent: number;
  rssMiB: number;
  /** of which anonymous (heap, JIT, native runtime) */
  anonMiB: number;
  /** of which guest RAM pages touched through the read-only shared mapping (/dev/shm), and files (node, .so) */
  shmemMiB: number;
  fileMiB: number;
  peakRssMiB: number;
  /** containers in the last sample (checked = CONTAINERS) */
  sampled: number;
  samples: number;
  medianSampleUs: number;
  windowS: number;
  /** spawn to the first sample printed (JSON line) or served (Prometheus), ms */
  firstSampleMs: number;
}

const hexId = (i: number) => i.toString(16).padStart(64, 'c');

/** 100 containers as Docker's cgroupfs driver lays them out: /docker/<id>, own netns, veth pair. */
async function createContainers(guest: Guest, n: number): Promise<void> {
  const lines: string[] = [];
  for (let i = 1; i <= n; i++) {
    const cg = `/sys/fs/cgroup/docker/${hexId(i)}`;
    lines.push(
      `mkdir -p ${cg}; sh -c 'echo $$ > ${cg}/cgroup.procs; exec unshare -n sleep 1000000' </dev/null >/dev/null 2>&1 & p=$!; ` +
        `while [ "$(readlink /proc/$p/ns/net)" = "$(readlink /proc/1/ns/net)" ]; do sleep 0.02; done; ` +
        `/sbin/ip link add v${i} type veth peer name eth0 netns $p`,
    );
  }
  // the guest's command channel takes one line per command: a few containers per line
  for (let k = 0; k < lines.length; k += 5) {
    const r = await guest.sh(lines.slice(k, k + 5).join('; ') + '; echo created', 300_000);
    if (!r.output.includes('created')) throw new Error(`creating containers failed: ${r.output.slice(-500)}`);
  }
}

function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  // fields after "(comm)": state is field 3; utime 14, stime 15
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}

function memKiB(pid: number): { rss: number; hwm: number; anon: number; file: number; shmem: number } {
  const st = readFileSync(`/proc/${pid}/status`, 'latin1');
  const get = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(st)?.[1] ?? NaN);
  return { rss: get('VmRSS'), hwm: get('VmHWM'), anon: get('RssAnon'), file: get('RssFile'), shmem: get('RssShmem') };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] : NaN);

async function measure(guest: Guest, mode: string, rateHz: number, extra: string[]): Promise<OverheadRow> {
  const interval = `${Math.round(1000 / rateHz)}ms`;
  const args = [join(ROOT, 'bin', 'ciel.mjs'), 'monitor', '--qemu', guest.qmpSocket, '--memory', guest.memFile, '--kernel', RELEASE, '--interval', interval, '--vm', 'bench', ...extra];
  const spawnedAt = performance.now();
  let firstSampleMs = NaN;
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let buf = '';
  let lines = 0;
  const sampleUs: number[] = [];
  let counting = false;
  let sampled = 0;
  let metricsUrl: string | undefined;
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
    metricsUrl ??= /metrics at (\S+)/.exec(stderr)?.[1];
  });
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const l = buf.slice(0, i);
      buf = buf.slice(i + 1);
      lines++;
      if (Number.isNaN(firstSampleMs) && l.startsWith('{')) firstSampleMs = performance.now() - spawnedAt;
      if (counting && l.startsWith('{')) {
        const j = JSON.parse(l) as { sample_us: number; containers: unknown[] };
        sampleUs.push(j.sample_us);
        sampled = j.containers.length;
      }
    }
  });
  const exited = new Promise<void>((r) => child.on('close', () => r()));
  let scraper: NodeJS.Timeout | undefined;
  try {
    // start-up (tsx, koffi, loading the .so, KASLR) is not the steady state: wait for samples, then warm up
    const t0 = Date.now();
    while (lines === 0 && !metricsUrl) {
      if (child.exitCode !== null) throw new Error(`ciel monitor exited: ${stderr}`);
      if (Date.now() - t0 > 120_000) throw new Error(`ciel monitor produced nothing in 120 s: ${stderr}`);
      await sleep(100);
    }
    if (metricsUrl) {
      const url = metricsUrl;
      scraper = setInterval(() => void fetch(url).then((r) => r.text()).catch(() => {}), 1000); // Prometheus' usual 1 s..15 s
    }
    await sleep(WARMUP_S * 1000);
    const pid = child.pid!;
    // with --quiet the number of samples comes from the exporter's own counter
    const scrapedCount = async () =>
      metricsUrl ? Number(/^ciel_sample_duration_seconds_count\{vm="bench"\} (\d+)/m.exec(await (await fetch(metricsUrl)).text())?.[1]) : NaN;
    const s0 = await scrapedCount();
    const c0 = cpuTicks(pid);
    const w0 = performance.now();
    counting = true;
    const l0 = lines;
    await sleep(WINDOW_S * 1000);
    const c1 = cpuTicks(pid);
    const w1 = performance.now();
    const m = memKiB(pid);
    counting = false;
    const s1 = await scrapedCount();
    if (metricsUrl) {
      const text = await (await fetch(metricsUrl)).text();
      sampled = text.split('\n').filter((l) => l.startsWith('container_cpu_usage_seconds_total{')).length;
    }
    if (sampled !== CONTAINERS) throw new Error(`${mode}: the monitor saw ${sampled} containers, not ${CONTAINERS}`);
    const windowS = (w1 - w0) / 1000;
    return {
      mode,
      rateHz,
      containers: CONTAINERS,
      cpuPercent: Math.round(((c1 - c0) / CLK_TCK / windowS) * 1000) / 10,
      rssMiB: Math.round((m.rss / 1024) * 10) / 10,
      anonMiB: Math.round((m.anon / 1024) * 10) / 10,
      shmemMiB: Math.round((m.shmem / 1024) * 10) / 10,
      fileMiB: Math.round((m.file / 1024) * 10) / 10,
      sampled,
      peakRssMiB: Math.round((m.hwm / 1024) * 10) / 10,
      samples: metricsUrl ? s1 - s0 : lines - l0,
      medianSampleUs: median(sampleUs),
      windowS: Math.round(windowS * 10) / 10,
      firstSampleMs: Math.round(firstSampleMs),
    };
  } finally {
    if (scraper) clearInterval(scraper);
    if (child.exitCode === null) child.kill('SIGTERM');
    const t = setTimeout(() => child.exitCode === null && child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
  }
}

/** `ciel --help` as a process, median of 10: what a user waits for before anything is read. */
async function helpMs(): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < 10; i++) {
    const t0 = performance.now();
    await new Promise<void>((res, rej) =>
      spawn(process.execPath, [join(ROOT, 'bin', 'ciel.mjs'), '--help'], { stdio: 'ignore' }).on('close', (c) => (c === 0 ? res() : rej(new Error(`ciel --help exited ${c}`)))),
    );
    times.push(performance.now() - t0);
  }
  return Math.round(median(times));
}

export async function benchOverhead(log: (s: string) => void = console.log): Promise<OverheadRow[]> {
  await buildMonitor({ release: RELEASE });
  const help = await helpMs();
  const guest = await bootGuest({ bare: true, name: `bench-overhead-${process.pid}` });
  const rows: OverheadRow[] = [];
  let drgn: DrgnRow | Error;
  try {
    await createContainers(guest, CONTAINERS);
    rows.push(await measure(guest, '--json (stdout drained)', 1, ['--json']));
    rows.push(await measure(guest, '--json (stdout drained)', 10, ['--json']));
    rows.push(await measure(guest, '--quiet --prometheus, scraped every 1 s', 10, ['--quiet', '--prometheus', '127.0.0.1:0']));
    drgn = await benchDrgn(guest, RELEASE).catch((e: Error) => e);
  } finally {
    await guest.stop();
  }
  log(`overhead: \`ciel monitor\` as a subprocess, ${CONTAINERS} containers in a TCG guest, CPU from /proc/<pid>/stat over ~${WINDOW_S} s after ${WARMUP_S} s of warm-up`);
  log('| output | rate | containers sampled | CPU % of one core | RSS MiB (anon / guest RAM touched / files) | peak RSS MiB | samples in window | median sample us | start to first sample ms |');
  log('|---|---|---|---|---|---|---|---|---|');
  for (const r of rows)
    log(
      `| ${r.mode} | ${r.rateHz} Hz | ${r.sampled} | ${r.cpuPercent} | ${r.rssMiB} (${r.anonMiB} / ${r.shmemMiB} / ${r.fileMiB}) | ${r.peakRssMiB} | ${r.samples} | ${Number.isNaN(r.medianSampleUs) ? '-' : r.medianSampleUs} | ${Number.isNaN(r.firstSampleMs) ? '-' : r.firstSampleMs} |`,
    );
  const r10 = rows[1];
  log(`targets: RSS <= 60 MiB at 10 Hz -> ${r10.rssMiB <= 60 ? 'met' : 'NOT met'} (${r10.rssMiB}); start to first sample <= 150 ms -> ${r10.firstSampleMs <= 150 ? 'met' : 'NOT met'} (${r10.firstSampleMs}); \`ciel --help\` <= 150 ms -> ${help <= 150 ? 'met' : 'NOT met'} (${help} ms, median of 10)`);
  if (drgn instanceof Error) log(`drgn baseline not measured: ${drgn.message}`);
  else {
    log(`peer: drgn ${drgn.drgnVersion} vs \`ciel monitor --vmcore\`, the same ${drgn.containers} containers' CPU and memory from dumps of the same paused guest (${drgn.mismatches} containers differ)`);
    log('| reader | start-up ms | peak RSS MiB | one sample ms |');
    log('|---|---|---|---|');
    log(`| drgn (python3, DWARF from the -dbg package) | ${drgn.drgnStartMs} | ${drgn.drgnPeakRssMiB} | ${drgn.drgnSampleMs} |`);
    log(`| ciel monitor --vmcore | ${drgn.cielStartMs} | ${drgn.cielPeakRssMiB} | ${drgn.cielSampleMs} |`);
  }
  return rows;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await benchOverhead();
