// The page walker alone (libciel_rt.so, no monitor): every paging shape and every failure it must report.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runtimeObjects } from '../../../compiler/runtime-objects.ts';
import { RawFileBackend } from '../../../vmi/backends/raw-file.ts';
import { GuestFaultError } from '../../../common/errors.ts';
import { NativeRuntime } from '../../../vmi/native-runtime.ts';
import { PAGE, SyntheticGuest } from '../../../testbed/synthetic/image.ts';

const dir = mkdtempSync(join(tmpdir(), 'ciel-walk-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let rtSo: string;
beforeAll(async () => {
  rtSo = (await runtimeObjects()).rtSo;
});

function faultOf(fn: () => unknown): GuestFaultError {
  try {
    fn();
  } catch (e) {
    if (e instanceof GuestFaultError) return e;
    throw e;
  }
  throw new Error('expected a guest fault');
}

describe.each([false, true])('page walk, la57=%s', (la57) => {
  const g = new SyntheticGuest(8 << 20, la57);
  const hi = la57 ? 0xff11000000000000n : 0xffff888000000000n;
  const k4 = hi + 0x1234000n;
  const m2 = hi + 0x40000000n; // next 1 GiB slot: 2 MiB pages
  const g1 = hi + 0x80000000n; // 1 GiB page over physical 0 (RAM is only 8 MiB)
  const k4pa = g.allocPage();
  g.map(k4, k4pa, PAGE.KiB4);
  const m2pa = g.allocPhys(PAGE.MiB2, PAGE.MiB2);
  g.map(m2, m2pa, PAGE.MiB2);
  g.map(g1, 0n, PAGE.GiB1);
  // an entry pointing past the end of RAM
  const bad = hi + 0x2000000n;
  g.map(bad, 0x7fff000000n, PAGE.KiB4);
  g.mem.write('hello, walker', Number(k4pa + 0x10n));
  const path = join(dir, `walk-${la57}.raw`);
  g.saveRaw(path);

  let rt: NativeRuntime;
  beforeAll(() => {
    rt = new NativeRuntime(rtSo);
    rt.attach(new RawFileBackend(path), { cr3: g.cr3 | 0x1000n, cr4: g.cr4 }); // PTI user CR3 works too
  });
  afterAll(() => rt.close());

  it('4 KiB, 2 MiB and 1 GiB pages translate to the exact physical address', () => {
    expect(rt.translate(k4 + 0x10n)).toBe(k4pa + 0x10n);
    expect(rt.translate(m2 + 0x1abcden)).toBe(m2pa + 0x1abcden);
    expect(rt.translate(g1 + 0x345678n)).toBe(0x345678n);
    expect(rt.readVirt(k4 + 0x10n, 13).toString()).toBe('hello, walker');
    expect(rt.readVirt(g1 + k4pa + 0x10n, 5).toString()).toBe('hello'); // same bytes via the 1 GiB map
  });

  it('reports not-present entries with the level where the walk stopped', () => {
    const f = faultOf(() => rt.translate(k4 + 0x1000n)); // the next 4 KiB page is not mapped
    expect(f.code).toBe(1);
    expect(f.message).toMatch(/level 1/);
    const top = faultOf(() => rt.translate(la57 ? 0xff20000000000000n : 0xffff900000000000n));
    expect(top.message).toMatch(la57 ? /level 5/ : /level 4/);
  });

  it('reports memory outside guest RAM (1 GiB page beyond 8 MiB, bad PTE target)', () => {
    expect(faultOf(() => rt.readVirt(g1 + 0x900000n, 8)).code).toBe(2);
    expect(faultOf(() => rt.readVirt(bad, 8)).code).toBe(2);
  });

  it('refuses non-canonical and user-half addresses', () => {
    expect(faultOf(() => rt.translate(la57 ? 0xfe00000000000000n : 0xff00800000000000n)).code).toBe(3);
    expect(faultOf(() => rt.readVirt(0x1000n, 8)).code).toBe(4);
  });
});
