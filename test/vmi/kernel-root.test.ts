import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RawFileBackend } from '../../vmi/backends/raw-file.ts';
import { kernelHalfPresent, kernelRoot, pickKernelRoot } from '../../vmi/kernel-root.ts';

const dir = mkdtempSync(join(tmpdir(), 'ciel-root-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// 64 KiB of "RAM": 0x1000 a user-only table (as 7.3 user processes had), 0x2000 a full one,
// 0x4000/0x5000 a PTI pair (kernel root, user copy with two kernel-half entries)
const ram = Buffer.alloc(0x10000);
ram.writeBigUInt64LE(0x9067n, 0x1000 + 0 * 8); // user half only
for (const i of [256, 273, 300, 508, 511]) ram.writeBigUInt64LE(0xa067n, 0x2000 + i * 8);
for (const i of [256, 273, 300, 508, 511]) ram.writeBigUInt64LE(0xa067n, 0x4000 + i * 8);
for (const i of [508, 511]) ram.writeBigUInt64LE(0xb067n, 0x5000 + i * 8);
const file = join(dir, 'ram');
writeFileSync(file, ram);
const b = new RawFileBackend(file);
const cr4 = 0x6f0n;

describe('the vCPU whose CR3 maps the kernel', () => {
  it('counts present kernel-half entries, -1 outside RAM', () => {
    expect(kernelHalfPresent(b, 0x1000n)).toBe(0);
    expect(kernelHalfPresent(b, 0x2000n)).toBe(5);
    expect(kernelHalfPresent(b, 0x100000n)).toBe(-1);
  });

  it('skips a user process whose table has no kernel half (7.3), and CPUs not started', () => {
    expect(pickKernelRoot(b, [{ cr3: 0x1000n, cr4 }, { cr3: 0x2000n, cr4 }])).toEqual({ cr3: 0x2000n, cr4 });
    expect(pickKernelRoot(b, [{ cr3: 0n, cr4: 0n }, { cr3: 0x2000n, cr4 }])).toEqual({ cr3: 0x2000n, cr4 });
    // the first of equals wins (any vCPU in the kernel works)
    expect(pickKernelRoot(b, [{ cr3: 0x2000n, cr4 }, { cr3: 0x4000n, cr4 }]).cr3).toBe(0x2000n);
  });

  it('counts a PTI user CR3 by its kernel root (the walker masks bit 12 then)', () => {
    expect(pickKernelRoot(b, [{ cr3: 0x1000n, cr4 }, { cr3: 0x5000n, cr4 }]).cr3).toBe(0x5000n);
  });
});

describe('the kernel\'s own root from VMCOREINFO', () => {
  it('takes init_top_pgt (never freed) over any vCPU, and falls back when it maps nothing', () => {
    const withInfo = Buffer.from(ram);
    withInfo.write('OSRELEASE=7.3.4+deb13-amd64\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff80001000\nNUMBER(phys_base)=4096\nKERNELOFFSET=0\n\0', 0x8000, 'latin1');
    const f = join(dir, 'ram-info');
    writeFileSync(f, withInfo);
    const bi = new RawFileBackend(f);
    // init_top_pgt at 0x1000 - START_KERNEL_MAP + phys_base 4096 (decimal, as the kernel prints it) = 0x2000 (the full table)
    expect(kernelRoot(bi, [{ cr3: 0x5000n, cr4 }])).toEqual({ cr3: 0x2000n, cr4 });
    // without VMCOREINFO: the vCPU choice
    expect(kernelRoot(b, [{ cr3: 0x1000n, cr4 }, { cr3: 0x4000n, cr4 }])).toEqual({ cr3: 0x4000n, cr4 });
  });
});
