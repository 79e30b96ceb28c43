// End to end on synthetic guest memory: reader.c compiled through the whole pipeline (clang ->
// instrument -> g_map fast path -> O2 -> .so), loaded through koffi, reading real x86-64 page tables.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MemoryBackend } from '../../../vmi/backends/backend.ts';
import { ElfCoreBackend } from '../../../vmi/backends/elf-core.ts';
import { RawFileBackend } from '../../../vmi/backends/raw-file.ts';
import { GuestFaultError } from '../../../common/errors.ts';
import { NativeRuntime } from '../../../vmi/native-runtime.ts';
import { buildWorld, compileReader, decodeWalkOut, CROSSING_VALUE, GROUP_ID, statValue, WALK_OUT_SIZE, type SyntheticWorld } from '../../../testbed/synthetic/fixture.ts';

const dir = mkdtempSync(join(tmpdir(), 'ciel-reader-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let so: string;
let slotNames: string[];
beforeAll(async () => {
  const r = await compileReader(join(dir, 'build'));
  so = r.so;
  slotNames = r.report!.slots.map((s) => s.name);
});

function attach(world: SyntheticWorld, backend: MemoryBackend, regs = { cr3: world.guest.cr3, cr4: world.guest.cr4 }) {
  const rt = new NativeRuntime(so);
  rt.attach(backend, regs);
  rt.writeU64s('__ciel_slots', slotNames.map((n) => world.symbols[n]));
  return rt;
}

function expectCorrectWalk(rt: NativeRuntime, world: SyntheticWorld) {
  const out = Buffer.alloc(WALK_OUT_SIZE);
  const { result, stats } = rt.call('ciel_mon_walk', out);
  const w = decodeWalkOut(out);
  expect(result).toBe(world.expected.count);
  expect(w.count).toBe(200);
  expect(w.sumPid).toBe(20100n);
  expect(w.sumUtime).toBe(world.expected.sumUtime);
  expect(w.xorFlags).toBe(world.expected.xorFlags);
  expect(w.firstComm).toBe('task-0');
  expect(w.crossing).toBe(CROSSING_VALUE);
  expect(w.copied).toEqual(Array.from({ length: 8 }, (_, k) => statValue(k)));
  expect(w.groupId).toBe(GROUP_ID);
  return stats;
}

describe.each([
  ['4-level', false],
  ['5-level (LA57)', true],
])('reader on a synthetic guest, %s paging', (_name, la57) => {
  const world = buildWorld(la57);
  const raw = join(dir, `mem-${la57 ? 5 : 4}.raw`);
  world.guest.saveRaw(raw);

  it('reads the exact values through the raw-file backend', () => {
    const backend = new RawFileBackend(raw);
    const rt = attach(world, backend);
    const stats = expectCorrectWalk(rt, world);
    expect(stats.bounced).toBeGreaterThanOrEqual(2); // the crossing u64 and the stats copy at least
    expect(stats.accesses).toBeGreaterThanOrEqual(800); // 4 loads per task at least
    rt.close();
    void backend.close();
  });

  it('reads the same values from an ELF core (QEMU notes give CR3/CR4, ranges with a hole)', async () => {
    const core = join(dir, `mem-${la57 ? 5 : 4}.elf`);
    // leave out a physical range nothing lives in, so the dump has two PT_LOADs
    world.guest.saveElfCore(core, [[0x20000n, 0x40000n]]);
    const backend = new ElfCoreBackend(core);
    expect(backend.ranges().length).toBe(2);
    const regs = await backend.registers();
    expect(regs.cr3 & ~0x1000n).toBe(world.guest.cr3); // PTI user copy bit set in the note
    const rt = attach(world, backend, regs);
    expectCorrectWalk(rt, world);
    // a kernel address whose physical page is in the hole is reported as outside RAM
    expect(() => rt.readVirt(world.layout.directMap + 0x30000n, 8)).toThrow(/outside guest RAM/);
    rt.close();
    await backend.close();
  });
});

describe('fault containment', () => {
  const world = buildWorld(false);
  const raw = join(dir, 'mem-faults.raw');
  world.guest.saveRaw(raw);

  it('a cyclic list ends the call on the load budget, naming a guest address', () => {
    const backend = new RawFileBackend(raw);
    const rt = attach(world, backend);
    // make the 10th task point to itself: the unbounded walk never reaches the head
    const t = world.taskAddrs[9];
    const pa = world.guest.virtToPhys(t + 32n);
    const cyclic = Buffer.from(world.guest.mem);
    cyclic.writeBigUInt64LE(t + 32n, Number(pa));
    const cyclicPath = join(dir, 'mem-cyclic.raw');
    writeFileSync(cyclicPath, cyclic);
    const b2 = new RawFileBackend(cyclicPath);
    const rt2 = attach(world, b2);
    const out = Buffer.alloc(8);
    let err: unknown;
    try {
      rt2.call('ciel_mon_walk_unbounded', out, null, 100_000);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(GuestFaultError);
    expect((err as GuestFaultError).code).toBe(5);
    expect((err as GuestFaultError).gva).toBe(t + 32n);
    // the bounded walk on the same memory stops at its own limit and still returns
    expect(rt2.call('ciel_mon_walk', Buffer.alloc(WALK_OUT_SIZE)).result).toBe(100000);
    // and the healthy guest still reads correctly in the same process
    expectCorrectWalk(rt, world);
    rt.close();
    rt2.close();
  });
});
