// A hostile guest: 1,000 random corruptions of page tables, list pointers and data, applied in place
// to the live memory file (MAP_SHARED, as a guest would). Every call must either return or raise a
// GuestFaultError; the process never crashes or hangs, and after restoring the bytes it reads
// correctly again.
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { RawFileBackend } from '../../../vmi/backends/raw-file.ts';
import { GuestFaultError } from '../../../common/errors.ts';
import { NativeRuntime } from '../../../vmi/native-runtime.ts';
import { buildWorld, compileReader, decodeWalkOut, WALK_OUT_SIZE } from '../../../testbed/synthetic/fixture.ts';

const TRIALS = 1000;
const dir = mkdtempSync(join(tmpdir(), 'ciel-corrupt-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const world = buildWorld(false);
const path = join(dir, 'mem.raw');
world.guest.saveRaw(path);
let rt: NativeRuntime;
let fd: number;

beforeAll(async () => {
  const r = await compileReader(join(dir, 'build'));
  rt = new NativeRuntime(r.so);
  rt.attach(new RawFileBackend(path), { cr3: world.guest.cr3, cr4: 0n });
  rt.writeU64s('__ciel_slots', r.report!.slots.map((s) => world.symbols[s.name]));
  fd = openSync(path, 'r+');
});
afterAll(() => closeSync(fd));

/** Deterministic PRNG (xorshift32) so a failure can be replayed from its trial number. */
function rng(seed: number) {
  let x = seed || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

it(`survives ${TRIALS} random corruptions and recovers`, () => {
  const g = world.guest;
  const tablePages: number[] = [];
  // page-table pages are the first allocations after 1 MiB; find them by walking the tree
  const collect = (table: bigint, level: number) => {
    tablePages.push(Number(table));
    if (level === 1) return;
    for (let i = 0; i < 512; i++) {
      const e = g.mem.readBigUInt64LE(Number(table) + i * 8);
      if (e & 1n && !(e & 0x80n)) collect(e & 0x000ffffffffff000n, level - 1);
    }
  };
  collect(g.cr3, 4);
  const outcomes = { ok: 0, faults: {} as Record<number, number> };
  const out = Buffer.alloc(WALK_OUT_SIZE);
  for (let trial = 0; trial < TRIALS; trial++) {
    const rand = rng(trial + 1);
    const edits: { off: number; bytes: Buffer }[] = [];
    const kind = trial % 5;
    const u64 = (v: bigint) => {
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(BigInt.asUintN(64, v));
      return b;
    };
    const task = world.taskAddrs[Math.floor(rand() * world.taskAddrs.length)];
    if (kind === 0) {
      // random bytes over a page-table entry
      const page = tablePages[Math.floor(rand() * tablePages.length)];
      const off = page + Math.floor(rand() * 512) * 8;
      edits.push({ off, bytes: Buffer.from(Array.from({ length: 8 }, () => Math.floor(rand() * 256))) });
    } else if (kind === 1) {
      // a list pointer to itself (cycle) or to an earlier task (longer cycle)
      const target = rand() < 0.5 ? task + 32n : world.taskAddrs[0] + 32n;
      edits.push({ off: Number(g.virtToPhys(task + 32n)), bytes: u64(target) });
    } else if (kind === 2) {
      // a list pointer to NULL, the user half, non-canonical, or unmapped kernel space
      const choices = [0n, 0x7fff12345000n, 0x8000000000000000n, 0xffffc90000100000n, 0xffffffffffffff00n];
      edits.push({ off: Number(g.virtToPhys(task + 32n)), bytes: u64(choices[Math.floor(rand() * choices.length)]) });
    } else if (kind === 3) {
      // random garbage pointer
      edits.push({ off: Number(g.virtToPhys(task + 32n)), bytes: u64(BigInt(Math.floor(rand() * 2 ** 32)) << 32n | BigInt(Math.floor(rand() * 2 ** 32))) });
    } else {
      // random bytes anywhere in the first 4 MiB (tables, tasks, globals)
      const off = Math.floor(rand() * (4 << 20));
      edits.push({ off, bytes: Buffer.from(Array.from({ length: 1 + Math.floor(rand() * 64) }, () => Math.floor(rand() * 256))) });
    }
    const saved = edits.map((e) => Buffer.from(g.mem.subarray(e.off, e.off + e.bytes.length)));
    for (const e of edits) writeSync(fd, e.bytes, 0, e.bytes.length, e.off);
    try {
      rt.call('ciel_mon_walk', out, null, 200_000);
      outcomes.ok++;
    } catch (e) {
      expect(e).toBeInstanceOf(GuestFaultError);
      const code = (e as GuestFaultError).code;
      outcomes.faults[code] = (outcomes.faults[code] ?? 0) + 1;
    }
    edits.forEach((e, i) => writeSync(fd, saved[i], 0, saved[i].length, e.off));
  }
  // after all that, the restored guest reads exactly right
  out.fill(0);
  rt.call('ciel_mon_walk', out);
  expect(decodeWalkOut(out).sumPid).toBe(20100n);
  const faulted = Object.values(outcomes.faults).reduce((a, b) => a + b, 0);
  console.log(`corruption outcomes over ${TRIALS} trials:`, JSON.stringify(outcomes));
  expect(outcomes.ok + faulted).toBe(TRIALS);
  expect(faulted).toBeGreaterThan(TRIALS / 4); // most pointer corruptions must be caught
  expect(outcomes.faults[5]).toBeGreaterThan(0); // cycles hit the budget
  expect(outcomes.faults[4]).toBeGreaterThan(0); // NULL / user-half pointers
});
