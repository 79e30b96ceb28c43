// `ciel monitor` as an operator runs it: a real subprocess against one booted test guest (cgroup v2,
// KASLR on) that carries a Docker disk (a read-only ext4 virtio disk with config.v2.json per container).
// The guest is shared by every test in this file; tests run one after another because QEMU's QMP
// socket takes one client at a time.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildMonitor } from '../../compiler/build.ts';
import type { QemuLiveBackend } from '../../vmi/backends/qemu-live.ts';
import { VmSession } from '../../vmi/session.ts';
import type { ContainerSample, Sample } from '../../vmi/sample.ts';
import { bootGuest, type Guest } from '../../testbed/guest/boot.ts';
import { DOCKER_DISK_INFO } from '../../testbed/guest/build.ts';
import { GUEST_CONTAINERS, LOAD, containerByName } from '../../testbed/guest/containers.ts';

const RELEASE = '6.1.0-56-amd64';
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CIEL = join(ROOT, 'bin', 'ciel.mjs');
const IDS = GUEST_CONTAINERS.map((c) => c.id).sort();
const NAME_OF = new Map(GUEST_CONTAINERS.map((c) => [c.id, DOCKER_DISK_INFO[c.name].name]));
const IMAGE_OF = new Map(GUEST_CONTAINERS.map((c) => [c.id, DOCKER_DISK_INFO[c.name].image]));
const BURNER = containerByName('burner');

type NamedSample = Sample & { containers: (ContainerSample & { image?: string })[]; tlb_hit_ratio?: number };

interface Running {
  proc: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  lines: () => string[];
  /** resolves when pred() holds (polled), rejects after timeoutMs or when the process exits first */
  until(pred: () => boolean, timeoutMs: number, what: string): Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM and wait */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function start(args: string[]): Running {
  const proc = spawn(process.execPath, [CIEL, 'monitor', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.on('close', (code, signal) => {
      done = true;
      resolve({ code, signal });
    }),
  );
  return {
    proc,
    stdout: () => out,
    stderr: () => err,
    lines: () => out.split('\n').filter((l) => l.trim() !== ''),
    exited,
    async until(pred, timeoutMs, what) {
      const t0 = Date.now();
      while (!pred()) {
        if (done) throw new Error(`ciel monitor exited before ${what}; stderr:\n${err}\nstdout tail:\n${out.slice(-2000)}`);
        if (Date.now() - t0 > timeoutMs) throw new Error(`no ${what} within ${timeoutMs} ms; stderr:\n${err}\nstdout tail:\n${out.slice(-2000)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async stop() {
      if (!done) proc.kill('SIGTERM');
      const t = setTimeout(() => !done && proc.kill('SIGKILL'), 10_000);
      const r = await exited;
      clearTimeout(t);
      return r;
    },
  };
}

/** run to completion */
async function run(args: string[], timeoutMs = 90_000) {
  const r = start(args);
  const t = setTimeout(() => r.proc.kill('SIGKILL'), timeoutMs);
  const { code } = await r.exited;
  clearTimeout(t);
  return { code, stdout: r.stdout(), stderr: r.stderr(), lines: r.lines() };
}

function expectGuestContainers(s: NamedSample) {
  expect(s.containers.map((c) => c.id).sort()).toEqual(IDS);
  for (const c of s.containers) {
    expect(c.name).toBe(NAME_OF.get(c.id));
    expect(c.image).toBe(IMAGE_OF.get(c.id));
    expect(c.cgroup).toBe(GUEST_CONTAINERS.find((g) => g.id === c.id)!.cgroup);
    for (const k of ['cpu_usage_ns', 'memory_usage_bytes', 'io_read_bytes', 'io_write_bytes', 'net_rx_bytes', 'net_tx_bytes'] as const) {
      expect(Number.isSafeInteger(c[k]) && c[k] >= 0, `${c.name}.${k} = ${c[k]}`).toBe(true);
    }
  }
}

let guest: Guest;
let tmp: string;
let target: string[];

beforeAll(async () => {
  await buildMonitor({ release: RELEASE, log: (l) => process.stderr.write(`[build] ${l}\n`) });
  guest = await bootGuest({ name: `monitor-${process.pid}`, dockerDisk: true });
  tmp = mkdtempSync(join(tmpdir(), 'ciel-monitor-test-'));
  target = ['--qemu', guest.qmpSocket, '--memory', guest.memFile, '--kernel', RELEASE, '--disk', guest.dockerDisk!, '--vm', 'g'];
}, 900_000);

afterAll(async () => {
  await guest?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('ciel monitor (subprocess, live test guest with a Docker disk)', () => {
  it('--json --count 3 prints 3 samples with the known container ids and the names/images from the disk', async () => {
    const r = await run([...target, '--json', '--count', '3', '--interval', '500ms']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.lines).toHaveLength(3);
    const samples = r.lines.map((l) => JSON.parse(l) as NamedSample);
    let prev: NamedSample | undefined;
    for (const s of samples) {
      expect(s.vm).toBe('g');
      expect(s.kernel).toBe(RELEASE);
      expect(Number.isNaN(Date.parse(s.time))).toBe(false);
      expect(s.sample_us).toBeGreaterThan(0);
      expect(s.tlb_hit_ratio).toBeGreaterThan(0);
      expectGuestContainers(s);
      if (prev) {
        for (const c of s.containers) expect(c.cpu_usage_ns).toBeGreaterThanOrEqual(prev.containers.find((p) => p.id === c.id)!.cpu_usage_ns);
      }
      prev = s;
    }
  });

  it('--consistent pauses the vCPUs around each sample and reports the pause time', async () => {
    const r = await run([...target, '--json', '--count', '2', '--interval', '300ms', '--consistent']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.lines).toHaveLength(2);
    for (const l of r.lines) {
      const s = JSON.parse(l) as NamedSample;
      expect(s.pause_us).toBeGreaterThan(s.sample_us);
      expectGuestContainers(s);
    }
  });

  it('without --json and not on a TTY: plain tables, busiest first, burner (capped at 0.5 CPU) between 40 and 60 %', async () => {
    const r = await run([...target, '--count', '4', '--interval', '1500ms']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toMatch(/\x1b\[/); // no cursor movement when stdout is a pipe
    const blocks = r.stdout.split('\n\n').filter((b) => b.trim());
    expect(blocks).toHaveLength(4);
    expect(blocks[0]).toMatch(/rates from the next sample on/);
    const cpus: number[] = [];
    for (const b of blocks.slice(1)) {
      const lines = b.split('\n');
      const over = /over (\d+\.\d+) s/.exec(lines[0]);
      expect(over, lines[0]).not.toBeNull();
      expect(Number(over![1])).toBeGreaterThan(1.0);
      expect(lines[1]).toMatch(/^CONTAINER\s+CPU %\s+MEM\s+DISK READ\s+DISK WRITE\s+NET RX\s+NET TX$/);
      const rows = lines.slice(2).map((l) => l.trim().split(/\s{2,}/));
      expect(rows.map((x) => x[0]).sort()).toEqual([...NAME_OF.values()].sort());
      // sorted by CPU, and the capped burner ("web") is the busiest
      const pct = rows.map((x) => Number(x[1].replace('%', '')));
      expect([...pct].sort((a, b) => b - a)).toEqual(pct);
      const web = rows.find((x) => x[0] === DOCKER_DISK_INFO.burner.name)!;
      cpus.push(Number(web[1].replace('%', '')));
      // the disk container's write rate is visible (1 MiB per round, one round per second)
      const db = rows.find((x) => x[0] === DOCKER_DISK_INFO.disk.name)!;
      expect(db[4]).toMatch(/B\/s$/);
    }
    process.stderr.write(`[monitor test] burner CPU % per step: ${cpus.join(', ')}\n`);
    for (const c of cpus) {
      expect(c).toBeGreaterThanOrEqual(LOAD.burnerCpuFraction * 100 - 10);
      expect(c).toBeLessThanOrEqual(LOAD.burnerCpuFraction * 100 + 10);
    }
  });

  it('--prometheus on an ephemeral loopback port: cAdvisor metrics equal the sample at scrape time (within one interval)', async () => {
    const p = start([...target, '--json', '--interval', '500ms', '--prometheus', '127.0.0.1:0']);
    try {
      await p.until(() => /metrics at (\S+)/.test(p.stderr()) && p.lines().length >= 2, 60_000, 'metrics URL and 2 samples');
      const url = /metrics at (\S+)/.exec(p.stderr())![1];
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
      const before = p.lines().length;
      const res = await fetch(url);
      const text = await res.text();
      const after = p.lines().length;
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
      for (const m of [
        'container_cpu_usage_seconds_total',
        'container_memory_usage_bytes',
        'container_memory_working_set_bytes',
        'container_memory_rss',
        'container_memory_cache',
        'container_fs_reads_bytes_total',
        'container_fs_writes_bytes_total',
        'container_network_receive_bytes_total',
        'container_network_transmit_bytes_total',
        'ciel_sample_duration_seconds',
        'ciel_sample_errors_total',
        'ciel_tlb_hit_ratio',
      ])
        expect(text, m).toContain(`# TYPE ${m} `);
      const line = text.split('\n').find((l) => l.startsWith('container_cpu_usage_seconds_total{') && l.includes(`id="/docker/${BURNER.id}"`));
      expect(line, text.slice(0, 3000)).toBeDefined();
      expect(line).toContain(`name="${DOCKER_DISK_INFO.burner.name}"`);
      expect(line).toContain(`image="${DOCKER_DISK_INFO.burner.image}"`);
      expect(line).toContain('vm="g"');
      expect(line).toContain('cpu="total"');
      const value = Number(line!.slice(line!.lastIndexOf(' ') + 1));
      // the samples printed around the scrape: the exported value is the newest one at scrape time
      const samples = p.lines().map((l) => JSON.parse(l) as NamedSample);
      const values = samples.map((s) => s.containers.find((c) => c.id === BURNER.id)!.cpu_usage_ns / 1e9);
      const idx = values.indexOf(value);
      expect(idx, `scraped ${value}, samples ${values.join(', ')}`).toBeGreaterThanOrEqual(before - 1);
      expect(idx).toBeLessThanOrEqual(after - 1);
      expect(Math.abs(value - values[before - 1])).toBeLessThanOrEqual(0.5 * 1.5); // at most one 500 ms interval of a 0.5-CPU burner, with slack
      const dur = /^ciel_sample_duration_seconds_count\{vm="g"\} (\d+)/m.exec(text);
      expect(Number(dur?.[1])).toBeGreaterThanOrEqual(2);
      expect(text).toMatch(/^ciel_sample_errors_total\{vm="g"\} 0$/m);
      const tlb = /^ciel_tlb_hit_ratio\{vm="g"\} (\S+)/m.exec(text);
      expect(Number(tlb?.[1])).toBeGreaterThan(0);
      expect(Number(tlb?.[1])).toBeLessThanOrEqual(1);
      const ws = text.split('\n').find((l) => l.startsWith('container_memory_usage_bytes{') && l.includes(`name="${DOCKER_DISK_INFO.memfill.name}"`));
      expect(Number(ws!.split(' ').pop())).toBeGreaterThan(LOAD.memfillFileMiB * 1024 * 1024);
      expect((await fetch(url.replace('/metrics', '/'))).status).toBe(404);
    } finally {
      const { code } = await p.stop();
      expect(code).toBe(0);
    }
  });

  it('--config with two VMs: the good one keeps sampling while the one with a missing QMP socket is reported and retried', async () => {
    const cfg = join(tmp, 'ciel.json');
    writeFileSync(
      cfg,
      JSON.stringify({
        vms: [
          { name: 'good', backend: 'qemu', qmp: guest.qmpSocket, memory: guest.memFile, kernel: RELEASE, disk: guest.dockerDisk, interval: 0.5 },
          { name: 'bad', backend: 'qemu', qmp: join(tmp, 'no-such-qmp.sock'), memory: guest.memFile, kernel: RELEASE, interval: 0.5 },
        ],
      }),
    );
    const p = start(['--config', cfg, '--json', '--prometheus', '127.0.0.1:0']);
    try {
      await p.until(() => p.lines().length >= 6 && (p.stderr().match(/bad: cannot attach/g) ?? []).length >= 2, 60_000, '6 samples of good and 2 reports about bad');
      expect(p.proc.exitCode).toBeNull(); // still running
      const samples = p.lines().map((l) => JSON.parse(l) as NamedSample);
      for (const s of samples) {
        expect(s.vm).toBe('good');
        expectGuestContainers(s);
      }
      expect(p.stderr()).toMatch(/bad: cannot attach: .*no-such-qmp\.sock.*ENOENT.*retrying in/);
      const url = /metrics at (\S+)/.exec(p.stderr())![1];
      const text = await (await fetch(url)).text();
      expect(Number(/^ciel_sample_errors_total\{vm="bad"\} (\d+)/m.exec(text)?.[1])).toBeGreaterThanOrEqual(2);
      expect(text).toMatch(/container_cpu_usage_seconds_total\{[^}]*vm="good"/);
      expect(text).not.toMatch(/container_cpu_usage_seconds_total\{[^}]*vm="bad"/);
    } finally {
      const { code } = await p.stop();
      expect(code).toBe(0);
    }
  });

  it('--vmcore on an ELF dump-guest-memory (paging off) of the paused guest gives the same numbers as a live sample while paused', async () => {
    const core = join(tmp, 'guest.core');
    const session = await VmSession.open({ name: 'g', backend: 'qemu', qmp: guest.qmpSocket, memory: guest.memFile, kernel: RELEASE });
    const backend = session.backend as QemuLiveBackend;
    const monitor = session.monitor;
    let live: Sample;
    try {
      await backend.pause();
      try {
        live = monitor.sample();
        await backend.qmp.execute('dump-guest-memory', { paging: false, protocol: `file:${core}`, format: 'elf' }, 120_000);
        const again = monitor.sample(); // the dump did not change the guest
        expect(again.containers).toEqual(live.containers);
      } finally {
        await backend.resume();
      }
    } finally {
      await session.close();
    }
    expect(readFileSync(core).subarray(0, 4).toString('latin1')).toBe('\x7fELF');
    // the guest runs again, the dump stays still; the kernel release comes from the dump itself
    const r = await run(['--vmcore', core, '--disk', guest.dockerDisk!, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.lines).toHaveLength(1);
    const s = JSON.parse(r.lines[0]) as NamedSample;
    expect(s.kernel).toBe(RELEASE);
    expectGuestContainers(s);
    const strip = (cs: (ContainerSample & { image?: string })[]) =>
      cs.map(({ name: _n, image: _i, ...rest }) => rest).sort((a, b) => a.id.localeCompare(b.id));
    expect(strip(s.containers)).toEqual(strip(live!.containers));
    // the default output of a one-shot: cumulative counters as lines, with names
    const plain = await run(['--vmcore', core, '--disk', guest.dockerDisk!, '--kernel', RELEASE]);
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.lines[0]).toMatch(/6 container\(s\)/);
    expect(plain.stdout).toContain(`${DOCKER_DISK_INFO.burner.name} `);
    rmSync(core, { force: true });
  });

  it('--memory alone (raw memory file, page tables from VMCOREINFO) samples the same containers', async () => {
    const r = await run(['--memory', guest.memFile, '--kernel', RELEASE, '--disk', guest.dockerDisk!, '--json', '--count', '2', '--interval', '200ms']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.lines).toHaveLength(2);
    for (const l of r.lines) expectGuestContainers(JSON.parse(l) as NamedSample);
  });

  it.skipIf(existsSync('/dev/xen/privcmd'))('--xen fails clearly without a Xen hypervisor', async () => {
    const r = await run(['--xen', '1', '--kernel', RELEASE]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/\/dev\/xen\/privcmd is absent: this is not a Xen Dom0/);
    expect(r.stdout).toBe('');
  });

  it('--help tells every option; bad option combinations are refused with a message', async () => {
    const h = await run(['--help']);
    expect(h.code).toBe(0);
    for (const opt of ['--qemu', '--memory', '--vmcore', '--xen', '--config', '--kernel', '--disk', '--interval', '--count', '--consistent', '--json', '--prometheus', '--quiet', '--vm'])
      expect(h.stdout).toContain(opt);
    const both = await run(['--qemu', guest.qmpSocket, '--vmcore', '/nonexistent', '--kernel', RELEASE]);
    expect(both.code).toBe(1);
    expect(both.stderr).toMatch(/give one target/);
    const none = await run(['--json']);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/needs a target/);
    const port = await run([...target, '--prometheus', 'localhost:99999']);
    expect(port.code).toBe(1);
    expect(port.stderr).toMatch(/--prometheus wants \[HOST:\]PORT/);
  });
});
