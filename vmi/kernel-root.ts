// Which vCPU's CR3 to walk kernel addresses with. Up to 6.x every process's top-level table carries
// the kernel half, so any vCPU did. A 7.3 guest was seen running user processes whose top-level
// table has none of the 256 kernel-half entries present (the kernel switches tables on entry), while
// the other vCPU sat in the kernel: walking from such a CR3 faults on every kernel address. And a
// process's table is freed when it exits (the test guest runs short-lived shells): a root taken from
// one can turn into garbage under the monitor. So the root is the kernel's own init_top_pgt
// (swapper_pg_dir, never freed) where VMCOREINFO tells where it is, else the vCPU whose root maps the
// most of the kernel half.
import koffi from 'koffi';
import type { GuestRegisters, MemoryBackend } from './backends/backend.ts';
import { findVmcoreinfo } from './kaslr.ts';

/** __START_KERNEL_map: __pa_symbol(x) = x - this + phys_base */
const START_KERNEL_MAP = 0xffffffff80000000n;

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

/**
 * The top-level table to walk kernel addresses with: init_top_pgt from VMCOREINFO when it maps the
 * kernel half, else pickKernelRoot. CR4 (paging level) comes from a started vCPU.
 */
export function kernelRoot(backend: MemoryBackend, vcpus: GuestRegisters[]): GuestRegisters {
  const cr4 = (vcpus.find((v) => v.cr3 !== 0n) ?? vcpus[0]!).cr4;
  const info = findVmcoreinfo(backend);
  if (info?.initTopPgt != null && info.physBase != null && info.initTopPgt >= START_KERNEL_MAP) {
    const root = info.initTopPgt - START_KERNEL_MAP + info.physBase;
    if (root >= 0n && kernelHalfPresent(backend, root) > 0) return { cr3: root, cr4 };
  }
  return pickKernelRoot(backend, vcpus);
}
