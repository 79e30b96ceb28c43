// A hostile guest, for real: one booted cgroup2 test guest (KASLR on) whose cgroup structures the harness
// overwrites in the shared RAM file (pwrite at the guest-physical address, vCPUs paused so the guest itself
// does not trip over the garbage, original bytes restored before it runs again). For every case the
// monitor must return or raise GuestFaultError within a bounded wall time, report that sample as bad
// (a fault with the expected code, or the expected truncation flag), stay within its load budget, never
// hold a writable mapping of the file, and read exactly the guest's own numbers again after the restore.
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadBuild } from '../../../common/build-artifact.ts';
import { buildMonitor } from '../../../compiler/build.ts';
import { loadBtf } from '../../../compiler/kernel/btf.ts';
import { fetchKernel } from '../../../compiler/kernel/packages.ts';
import type { QemuLiveBackend } from '../../../vmi/backends/qemu-live.ts';
import { GuestFaultError } from '../../../common/errors.ts';
import type { GuestMonitor } from '../../../vmi/guest-monitor.ts';
import { VmSession } from '../../../vmi/session.ts';
import { DEFAULT_BUDGET } from '../../../vmi/native-runtime.ts';
import type { ContainerSample, Sample } from '../../../vmi/sample.ts';
import { bootGuest, type Guest } from '../../../testbed/guest/boot.ts';

const RELEASE = '6.1.0-56-amd64';
/** any single monitor call, however hostile the guest, must finish within this (TCG host, 2 cores) */
const MAX_CALL_MS = 5000;
const SMALL_BUDGET = 200_000;
const PHYS_MASK = 0x000f_ffff_ffff_f000n;
const u64 = (v: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt.asUintN(64, v));
  return b;
};
const hex = (v: bigint) => `0x${v.toString(16)}`;

let guest: Guest;
let backend: QemuLiveBackend;
let monitor: GuestMonitor;
let session: VmSession | undefined;
let fd = -1;
/** offsets from the guest kernel's BTF */
const off = { rootCgrp: 0, children: 0, sibling: 0, kn: 0, knName: 0 };
let A: Record<string, number>;
/** guest addresses found once the guest is up */
const at = { dflRoot: 0n, root: 0n, docker: 0n, victim: 0n, victimName: '', nrCpuIds: 0n, possibleMask: 0n };

beforeAll(async () => {
  await buildMonitor({ release: RELEASE, log: (l) => process.stderr.write(`[build] ${l}\n`) });
  const btf = await loadBtf(await fetchKernel(RELEASE));
  off.rootCgrp = btf.memberOffset('cgroup_root', 'cgrp');
  off.children = btf.memberOffset('cgroup', 'self.children');
  off.sibling = btf.memberOffset('cgroup', 'self.sibling');
  off.kn = btf.memberOffset('cgroup', 'kn');
  off.knName = btf.memberOffset('kernfs_node', 'name');
  guest = await bootGuest({ mode: 'cgroup2', name: `hostile-${process.pid}` });
  session = await VmSession.open({ name: 'hostile', backend: 'qemu', qmp: guest.qmpSocket, memory: guest.memFile, kernel: RELEASE });
  backend = session.backend as QemuLiveBackend;
  monitor = session.monitor;
  A = monitor.abi.CIEL_ABI;
  // the harness (not the monitor) writes the file: a plain read-write descriptor for pwrite
  fd = openSync(guest.memFile, 'r+');
  const slot = (n: string) => BigInt(loadBuild(RELEASE).slots.find((s) => s.name === n)!.address) + monitor.slide;
  at.dflRoot = slot('cgrp_dfl_root');
  at.nrCpuIds = slot('nr_cpu_ids');
  at.possibleMask = slot('__cpu_possible_mask');
  at.root = at.dflRoot + BigInt(off.rootCgrp);
  at.docker = childrenOf(at.root).find((c) => nameOf(c) === 'docker')!;
  expect(at.docker, 'no /docker cgroup in the guest').toBeDefined();
  const ctrs = childrenOf(at.docker);
  expect(ctrs.length).toBeGreaterThan(1);
  at.victim = ctrs[0];
  at.victimName = nameOf(at.victim);
  expect(at.victimName).toMatch(/^[0-9a-f]{64}$/);
}, 900_000);

afterAll(async () => {
  if (fd >= 0) closeSync(fd);
  await session?.close();
  await guest?.stop();
});

const rd64 = (va: bigint) => monitor.rt.readVirt(va, 8).readBigUInt64LE(0);

function childrenOf(cg: bigint): bigint[] {
  const head = cg + BigInt(off.children);
  const out: bigint[] = [];
  for (let p = rd64(head); p !== head && out.length < 10_000; p = rd64(p)) out.push(p - BigInt(off.sibling));
  return out;
}

function nameOf(cg: bigint): string {
  const kn = rd64(cg + BigInt(off.kn));
  const b = monitor.rt.readVirt(rd64(kn + BigInt(off.knName)), 80);
  return b.toString('latin1', 0, b.indexOf(0) < 0 ? 80 : b.indexOf(0));
}

function readPhys(pa: bigint, len: number): Buffer {
  const b = Buffer.alloc(len);
  readSync(fd, b, 0, len, Number(pa));
  return b;
}

/** The entry mapping `va` (PTE, or PDE/PDPTE for large pages), found by walking the guest's page tables from CR3 here. */
async function leafEntry(va: bigint): Promise<{ pa: bigint; level: number; value: bigint }> {
  const { cr3, cr4 } = await backend.registers();
  expect(cr4 & (1n << 12n), 'test assumes 4-level paging (qemu64)').toBe(0n);
  let table = cr3 & PHYS_MASK & ~0x1000n;
  for (let level = 4; level >= 1; level--) {
    const idx = (va >> BigInt(12 + 9 * (level - 1))) & 511n;
    const pa = table + idx * 8n;
    const value = readPhys(pa, 8).readBigUInt64LE(0);
    expect(value & 1n, `level ${level} entry for ${hex(va)} not present`).toBe(1n);
    if (level === 1 || (level <= 3 && value & 0x80n)) return { pa, level, value };
    table = value & PHYS_MASK;
  }
  throw new Error('unreachable');
}

/** An address in the kernel half whose pages (and the struct cgroup around it) are not mapped. */
function unmappedKernelAddress(): bigint {
  for (const base of [0xffffeb0000000000n, 0xffffc90000000000n, 0xfffffc0000000000n, 0xffffe90000000000n, 0xffffd40000000000n]) {
    const ok = [-1n, 0n, 1n, 2n].every((p) => {
      try {
        monitor.rt.translate(base + p * 4096n);
        return false;
      } catch (e) {
        return e instanceof GuestFaultError && e.code === 1;
      }
    });
    if (ok) return base;
  }
  throw new Error('no unmapped kernel address found');
}

interface Outcome {
  ms: number;
  result?: { flags: number; nrRecords: number; nrSeen: number };
  fault?: GuestFaultError;
  accesses: number;
  budget: number;
  sample?: Sample;
  sampleFault?: GuestFaultError;
  sampleMs: number;
}

/** One raw monitor call (header flags visible) and one full GuestMonitor.sample(), both timed. */
function runMonitor(budget = DEFAULT_BUDGET): Outcome {
  const buf = Buffer.alloc(monitor.abi.CIEL_MON_HDR_SIZE + 4096 * monitor.abi.CIEL_CGROUP_REC_SIZE);
  const o: Partial<Outcome> = { budget };
  let t = performance.now();
  try {
    const r = monitor.rt.call('ciel_mon_cgroup_v2', buf, null, budget);
    const h = monitor.abi.decodeCielMonHdr(buf);
    o.result = { flags: h.flags, nrRecords: h.nr_records, nrSeen: h.nr_seen };
    expect(r.result).toBe(h.nr_records);
  } catch (e) {
    if (!(e instanceof GuestFaultError)) throw e;
    o.fault = e;
  }
  o.ms = performance.now() - t;
  o.accesses = monitor.rt.stats().accesses;
  t = performance.now();
  try {
    o.sample = monitor.sample();
  } catch (e) {
    if (!(e instanceof GuestFaultError)) throw e;
    o.sampleFault = e;
  }
  o.sampleMs = performance.now() - t;
  return o as Outcome;
}

function assertMappingReadOnly(): void {
  const lines = readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.endsWith(guest.memFile));
  expect(lines.length, `${guest.memFile} not mapped by this process`).toBeGreaterThan(0);
  for (const l of lines) expect(l.split(/\s+/)[1], l).toBe('r--s');
}

function hashFile(): string {
  const h = createHash('sha1');
  const b = Buffer.alloc(8 << 20);
  for (let pos = 0; ; pos += b.length) {
    const n = readSync(fd, b, 0, b.length, pos);
    if (n <= 0) break;
    h.update(b.subarray(0, n));
  }
  return h.digest('hex');
}

/** Pause, apply the edits, run the monitor, restore the original bytes, resume. */
async function corrupt(
  edits: { pa: bigint; bytes: Buffer }[],
  budget?: number,
  opts: { hash?: boolean } = {},
): Promise<Outcome & { hashBefore?: string; hashAfter?: string; pristine: Sample }> {
  await backend.pause();
  const saved = edits.map((e) => readPhys(e.pa, e.bytes.length));
  try {
    // the same paused guest, before the edits: what a correct read gives
    const pristine = monitor.sample();
    for (const e of edits) writeSync(fd, e.bytes, 0, e.bytes.length, Number(e.pa));
    const hashBefore = opts.hash ? hashFile() : undefined;
    const o = runMonitor(budget);
    const hashAfter = opts.hash ? hashFile() : undefined;
    assertMappingReadOnly();
    return { ...o, hashBefore, hashAfter, pristine };
  } finally {
    try {
      edits.forEach((e, i) => writeSync(fd, saved[i], 0, saved[i].length, Number(e.pa)));
      for (const [i, e] of edits.entries()) expect(readPhys(e.pa, saved[i].length).equals(saved[i]), 'restore').toBe(true);
    } finally {
      await backend.resume();
    }
  }
}

const SETTLED: (keyof ContainerSample)[] = ['cpu_usage_ns', 'memory_usage_bytes', 'memory_rss_bytes', 'memory_cache_bytes', 'memory_inactive_file_bytes', 'io_read_bytes', 'io_write_bytes', 'net_rx_bytes', 'net_tx_bytes', 'pids'];

/**
 * After the restore the monitor reads the guest's own numbers again: a paused outside sample between two
 * guest readings; every counter that did not move between them must be exactly equal (at least one must).
 */
async function assertReadsCorrectly(what: string): Promise<void> {
  let exact = 0;
  for (let round = 0; round < 3 && exact === 0; round++) {
    const before = await guest.truth();
    await backend.pause();
    let s: Sample;
    try {
      s = monitor.sample();
    } finally {
      await backend.resume();
    }
    const after = await guest.truth();
    expect(s.truncated, `${what}: still truncated after restore`).toBeUndefined();
    expect(s.containers.map((c) => c.id).sort(), what).toEqual(before.containers.map((c) => c.id).sort());
    for (const tb of before.containers) {
      const ta = after.containers.find((c) => c.id === tb.id)!;
      const o = s.containers.find((c) => c.id === tb.id)!;
      for (const m of SETTLED) {
        const b = tb[m as keyof typeof tb] as number | null;
        const a = ta[m as keyof typeof ta] as number | null;
        if (b === null || a === null || a !== b) continue;
        // equal readings around the pause prove a counter did not move, but not a level: the disk
        // container starts a dd every second, so its pids and memory can dip and come back between
        if (tb.name === 'disk' && !MONOTONIC_FIELDS.has(m)) continue;
        const v = o[m] as number;
        if (m === 'cpu_usage_ns') expect(Math.floor(v / 1000) * 1000, `${what}: ${tb.name} ${m}`).toBe(b);
        else expect(v, `${what}: ${tb.name} ${m}`).toBe(b);
        exact++;
      }
    }
  }
  expect(exact, `${what}: nothing settled to compare exactly`).toBeGreaterThan(0);
}

const MONOTONIC_FIELDS = new Set(['cpu_usage_ns', 'io_read_bytes', 'io_write_bytes', 'net_rx_bytes', 'net_tx_bytes', 'net_rx_packets', 'net_tx_packets']);

function expectBounded(o: Outcome, what: string): void {
  expect(o.ms, `${what}: raw call wall time`).toBeLessThan(MAX_CALL_MS);
  expect(o.sampleMs, `${what}: sample wall time`).toBeLessThan(MAX_CALL_MS);
  expect(o.accesses, `${what}: loads vs budget`).toBeLessThanOrEqual(o.budget);
}

const log: Record<string, string> = {};
const note = (k: string, o: Outcome) => {
  log[k] =
    `raw ${o.fault ? `fault ${o.fault.code} (${o.fault.message})` : `ok flags=${o.result!.flags} records=${o.result!.nrRecords} seen=${o.result!.nrSeen}`}` +
    ` ${o.ms.toFixed(1)} ms, ${o.accesses} loads / budget ${o.budget}; sample ${o.sampleFault ? `fault ${o.sampleFault.code}` : `ok truncated=${JSON.stringify(o.sample!.truncated ?? [])} containers=${o.sample!.containers.length}`} ${o.sampleMs.toFixed(1)} ms`;
  process.stderr.write(`[hostile] ${k}: ${log[k]}\n`);
};

describe('hostile guest: corrupted cgroup structures in live guest RAM', () => {
  it('baseline: reads correctly, maps the file read-only', async () => {
    assertMappingReadOnly();
    const o = runMonitor();
    expect(o.fault).toBeUndefined();
    expect(o.result!.flags).toBe(0);
    expect(o.sample!.truncated).toBeUndefined();
    await assertReadsCorrectly('baseline');
  });

  it('self-looping sibling list: the walk stops at max_cgroups (TRUNC_LIMIT), file unchanged; small budget: budget fault', async () => {
    const link = at.victim + BigInt(off.sibling);
    const edit = [{ pa: monitor.rt.translate(link), bytes: u64(link) }];
    const o = await corrupt(edit, undefined, { hash: true });
    note('self-loop', o);
    expectBounded(o, 'self-loop');
    expect(o.fault).toBeUndefined();
    expect(o.result!.flags & A.CIEL_HDR_TRUNC_LIMIT).toBeTruthy();
    expect(o.result!.nrSeen).toBe(4096);
    expect(o.sample!.truncated).toContain('limit');
    expect(o.hashAfter, 'the monitor changed guest RAM').toBe(o.hashBefore);
    const small = await corrupt(edit, SMALL_BUDGET);
    note('self-loop, small budget', small);
    expectBounded(small, 'self-loop small budget');
    expect(small.fault?.code, 'load budget exhausted').toBe(5);
    await assertReadsCorrectly('after self-loop');
  });

  it('children list pointing to a user-half address: GuestFaultError (not a kernel address)', async () => {
    const head = at.docker + BigInt(off.children);
    const o = await corrupt([{ pa: monitor.rt.translate(head), bytes: u64(0x00007fff12345000n) }]);
    note('user-half', o);
    expectBounded(o, 'user-half');
    expect(o.fault?.code).toBe(4);
    expect(o.sampleFault?.code).toBe(4);
    expect(o.fault!.gva < 0x0000800000000000n).toBe(true);
    await assertReadsCorrectly('after user-half');
  });

  it('children list pointing to an unmapped kernel address: GuestFaultError (page not present)', async () => {
    const target = unmappedKernelAddress() + BigInt(off.sibling);
    const head = at.docker + BigInt(off.children);
    const o = await corrupt([{ pa: monitor.rt.translate(head), bytes: u64(target) }]);
    note('unmapped', o);
    expectBounded(o, 'unmapped');
    expect(o.fault?.code).toBe(1);
    expect(o.sampleFault?.code).toBe(1);
    await assertReadsCorrectly('after unmapped');
  });

  it('children list pointing to a non-canonical address: GuestFaultError (non-canonical)', async () => {
    const head = at.docker + BigInt(off.children);
    const o = await corrupt([{ pa: monitor.rt.translate(head), bytes: u64(0x8000123456789000n) }]);
    note('non-canonical', o);
    expectBounded(o, 'non-canonical');
    expect(o.fault?.code).toBe(3);
    expect(o.sampleFault?.code).toBe(3);
    await assertReadsCorrectly('after non-canonical');
  });

  it('huge count: nr_cpu_ids = 0xffffffff: the CPU loop is capped at NR_CPUS words, the numbers are unchanged', async () => {
    const o = await corrupt([{ pa: monitor.rt.translate(at.nrCpuIds), bytes: Buffer.from([0xff, 0xff, 0xff, 0xff]) }]);
    note('huge nr_cpu_ids', o);
    expectBounded(o, 'huge nr_cpu_ids');
    expect(o.fault).toBeUndefined();
    expect(o.result!.flags).toBe(0);
    // only the possible-CPU bits count: the same two CPUs, the same numbers as before the edit
    const strip = (s: Sample) => s.containers.map((c) => ({ ...c }));
    expect(strip(o.sample!)).toEqual(strip(o.pristine));
    await assertReadsCorrectly('after huge nr_cpu_ids');
  });

  it('huge count: every possible-CPU bit set (8192 CPUs): per-CPU reads of absent CPUs fault (user half), no crash', async () => {
    const o = await corrupt([
      { pa: monitor.rt.translate(at.nrCpuIds), bytes: Buffer.from([0xff, 0xff, 0xff, 0xff]) },
      // NR_CPUS = 8192 bits = 1024 bytes of mask (kernel image: physically contiguous)
      { pa: monitor.rt.translate(at.possibleMask), bytes: Buffer.alloc(1024, 0xff) },
    ]);
    note('all CPUs possible', o);
    expectBounded(o, 'all CPUs possible');
    // __per_cpu_offset[cpu] of a CPU that never came up is 0 in this kernel, so per_cpu_ptr() of it is the
    // raw per-CPU offset: a low-half address. The walk faults there, before any truncation could matter.
    expect(o.fault?.code).toBe(4);
    expect(o.sampleFault?.code).toBe(4);
    await assertReadsCorrectly('after all CPUs possible');
  });

  it('page-table entry of the page holding a container cgroup pointing outside RAM: GuestFaultError (outside guest RAM)', async () => {
    const e = await leafEntry(at.victim);
    // keep the flags, point the frame 256 GiB up (aligned for any leaf size, no reserved bits, far beyond 512 MiB)
    const bad = (e.value & ~PHYS_MASK) | 0x40_0000_0000n;
    const o = await corrupt([{ pa: e.pa, bytes: u64(bad) }]);
    note(`PTE outside RAM (level ${e.level})`, o);
    expectBounded(o, 'PTE outside RAM');
    expect(o.fault?.code).toBe(2);
    expect(o.sampleFault?.code).toBe(2);
    await assertReadsCorrectly('after PTE outside RAM');
  });

  it('summary', () => {
    assertMappingReadOnly();
    process.stderr.write(`[hostile] summary ${JSON.stringify(log, null, 1)}\n`);
    expect(Object.keys(log).length).toBe(8);
  });
});
