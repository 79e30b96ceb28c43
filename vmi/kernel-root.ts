// Which vCPU's CR3 to walk kernel addresses with. Up to 6.x every process's top-level table carries
// the kernel half, so any vCPU did. A 7.3 guest was seen running user processes whose top-level
// table has none of the 256 kernel-half entries present (the kernel switches tables on entry), while
// the other vCPU sat in the kernel: walking from such a CR3 faults on every kernel address. So take
// the vCPU whose root maps the most of the kernel half.
import koffi from 'koffi';
import type { GuestRegisters, MemoryBackend } from './backends/backend.ts';

/** Present entries among the kernel half (256..511) of a top-level table at guest-physical `root`; -1 outside RAM. */
export function kernelHalfPresent(backend: MemoryBackend, root: bigint): number {
  const r = backend.ranges().find((x) => root >= x.gpa && root + 4096n <= x.gpa + x.length);
  if (!r) return -1;
  const page = Buffer.from(koffi.view(r.host + (root - r.gpa), 4096) as ArrayBuffer);
  let n = 0;
  for (let i = 256; i < 512; i++) if (page.readBigUInt64LE(i * 8) & 1n) n++;
  return n;
}

/** The registers of the vCPU whose CR3 (bit 12 masked too: a PTI user copy) maps the most of the kernel half. */
export function pickKernelRoot(backend: MemoryBackend, vcpus: GuestRegisters[]): GuestRegisters {
  let best: GuestRegisters | undefined;
  let bestN = -1;
  for (const v of vcpus) {
    if (v.cr3 === 0n) continue;
    const root = v.cr3 & 0x000ffffffffff000n;
    const n = Math.max(kernelHalfPresent(backend, root), kernelHalfPresent(backend, root & ~0x1000n));
    if (n > bestN) {
      best = v;
      bestN = n;
    }
  }
  return best ?? vcpus[0]!;
}
