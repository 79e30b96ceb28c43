// The ELF-vmcore backend walks kernel addresses from the kernel's own root, as the live QEMU backend
// does: on a real dump of the test guest (testbed/elf-dump.ts, cached) whose first vCPU's CR3 is made
// to point at a table without the kernel half (what a 7.3 guest's user processes have, or a freed
// table), the root is still init_top_pgt and the sample equals the unpatched dump's.
import { closeSync, copyFileSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import koffi from 'koffi';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ElfCoreBackend } from '../../../vmi/backends/elf-core.ts';
import { GuestMonitor } from '../../../vmi/guest-monitor.ts';
import { findVmcoreinfo } from '../../../vmi/kaslr.ts';
import { kernelHalfPresent } from '../../../vmi/kernel-root.ts';
import { guestDump, RELEASE } from '../../../testbed/elf-dump.ts';

const CR3_IN_NOTE = 392 + 24; // QEMUCPUState: cr[0..4] from byte 392 (vmi/backends/elf-core.ts)

/** File offsets of the CR3 field of every "QEMU" CPU-state note of an ELF core. */
function cr3Offsets(path: string): number[] {
  const fd = openSync(path, 'r');
  const at = (off: number, len: number) => {
    const b = Buffer.alloc(len);
    readSync(fd, b, 0, len, off);
    return b;
  };
  try {
    const eh = at(0, 64);
    const phoff = Number(eh.readBigUInt64LE(32));
    const phnum = eh.readUInt16LE(56);
    const out: number[] = [];
    for (let i = 0; i < phnum; i++) {
      const ph = at(phoff + i * 56, 56);
      if (ph.readUInt32LE(0) !== 4 /* PT_NOTE */) continue;
      const off = Number(ph.readBigUInt64LE(8));
      const notes = at(off, Number(ph.readBigUInt64LE(32)));
      for (let p = 0; p + 12 <= notes.length; ) {
        const namesz = notes.readUInt32LE(p);
        const descsz = notes.readUInt32LE(p + 4);
        const name = notes.toString('latin1', p + 12, p + 12 + namesz).replace(/\0+$/, '');
        const desc = p + 12 + ((namesz + 3) & ~3);
        if (name === 'QEMU') out.push(off + desc + CR3_IN_NOTE);
        p = desc + ((descsz + 3) & ~3);
      }
    }
    return out;
  } finally {
    closeSync(fd);
  }
}

let dir: string;
let pristine: string;
beforeAll(async () => {
  pristine = await guestDump();
  dir = mkdtempSync(join(tmpdir(), 'ciel-elf-root-'));
}, 900_000);
afterAll(() => dir && rmSync(dir, { recursive: true, force: true }));

describe('ELF vmcore: the kernel root, not the first CR3', () => {
  it('a first vCPU on a table without the kernel half: init_top_pgt is used and the sample is unchanged', { timeout: 300_000 }, async () => {
    const good = new ElfCoreBackend(pristine);
    const info = findVmcoreinfo(good)!;
    const START_KERNEL_MAP = 0xffffffff80000000n;
    const initRoot = info.initTopPgt! - START_KERNEL_MAP + info.physBase!;
    expect(kernelHalfPresent(good, initRoot)).toBeGreaterThan(0);
    expect((await good.registers()).cr3).toBe(initRoot);
    const m0 = await GuestMonitor.open({ release: RELEASE, backend: good });
    const before = m0.sample();
    m0.close();
    // a page of RAM whose kernel half is empty (zeros): a top-level table of a process without the kernel mapped
    const r = good.ranges()[0]!;
    let empty = -1n;
    for (let off = 1n << 20n; off + 4096n <= r.length && empty < 0n; off += 4096n) {
      const page = Buffer.from(koffi.view(r.host + off, 4096) as ArrayBuffer);
      if (page.every((b) => b === 0)) empty = r.gpa + off;
    }
    expect(empty).toBeGreaterThan(0n);
    expect(kernelHalfPresent(good, empty)).toBe(0);
    await good.close();

    const core = join(dir, 'patched.elf');
    copyFileSync(pristine, core);
    const offs = cr3Offsets(core);
    expect(offs.length).toBe(2); // the test guest has 2 vCPUs
    const fd = openSync(core, 'r+');
    const v = Buffer.alloc(8);
    v.writeBigUInt64LE(empty);
    writeSync(fd, v, 0, 8, offs[0]);
    closeSync(fd);

    const bad = new ElfCoreBackend(core);
    try {
      expect(bad.info.cpus[0]!.cr3).toBe(empty); // what the backend used to walk with
      expect((await bad.registers()).cr3).toBe(initRoot);
      const m = await GuestMonitor.open({ release: RELEASE, backend: bad });
      const after = m.sample();
      m.close();
      expect(after.containers).toEqual(before.containers);
      expect(after.containers.length).toBe(6);
    } finally {
      await bad.close();
    }
  });
});
