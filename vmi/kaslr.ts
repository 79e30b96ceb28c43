// KASLR from physical memory: find the kernel's VMCOREINFO text in guest RAM and read the slide
// (KERNELOFFSET), phys_base, init_top_pgt and the paging level from it, without CR3 or a page walk.
//
// The kernel writes VMCOREINFO at boot (crash_save_vmcoreinfo_init) into a zeroed page (vmcoreinfo_data) and
// copies it into an ELF note (vmcoreinfo_note, text 24 bytes into its page). Both start with "OSRELEASE=".
// The format strings in kernel .rodata ("OSRELEASE=%s\n") are skipped.
import koffi from 'koffi';
import type { MemoryBackend, PhysRange } from './backends/backend.ts';

export interface VmcoreInfo {
  /** e.g. 6.1.0-56-amd64 */
  osrelease: string;
  /** the KASLR slide of the kernel image (KERNELOFFSET=, hex); 0 when KASLR is off */
  kernelOffset: bigint;
  /** NUMBER(phys_base): physical address the kernel was loaded at minus its link-time address */
  physBase: bigint | null;
  /** SYMBOL(init_top_pgt) (a kernel virtual address, slide included) */
  initTopPgt: bigint | null;
  /** NUMBER(pgtable_l5_enabled) */
  pgtableL5: boolean;
  pageSize: number | null;
  /** guest-physical address of the first byte of the text that was used */
  phys: bigint;
  /** wall time of the search */
  ms: number;
  /** every KEY=VALUE line as found */
  fields: Map<string, string>;
  /** the whole text */
  text: string;
}

const MARK = Buffer.from('OSRELEASE=', 'latin1');
const MAX_TEXT = 8192;
const CHUNK = 1n << 30n;

/** Parse VMCOREINFO text ("KEY=VALUE\n" lines). Returns null when it is not a filled-in VMCOREINFO. */
export function parseVmcoreinfo(text: string, phys = 0n, ms = 0): VmcoreInfo | null {
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) fields.set(line.slice(0, i), line.slice(i + 1));
  }
  const osrelease = fields.get('OSRELEASE');
  const off = fields.get('KERNELOFFSET');
  // format strings ("%s", "%lx") and partly written copies are not it
  if (!osrelease || osrelease.includes('%') || !/^[\x21-\x7e]+$/.test(osrelease)) return null;
  if (!off || !/^[0-9a-fA-F]+$/.test(off)) return null;
  const num = (k: string): bigint | null => {
    const v = fields.get(`NUMBER(${k})`);
    return v !== undefined && /^-?\d+$/.test(v) ? BigInt(v) : null;
  };
  const sym = (k: string): bigint | null => {
    const v = fields.get(`SYMBOL(${k})`);
    return v !== undefined && /^[0-9a-fA-F]+$/.test(v) ? BigInt(`0x${v}`) : null;
  };
  const ps = fields.get('PAGESIZE');
  return {
    osrelease,
    kernelOffset: BigInt(`0x${off}`),
    physBase: num('phys_base'),
    initTopPgt: sym('init_top_pgt'),
    pgtableL5: num('pgtable_l5_enabled') === 1n,
    pageSize: ps && /^\d+$/.test(ps) ? Number(ps) : null,
    phys,
    ms,
    fields,
    text,
  };
}

function textAt(buf: Buffer, i: number): string {
  let end = buf.indexOf(0, i);
  if (end < 0 || end - i > MAX_TEXT) end = Math.min(buf.length, i + MAX_TEXT);
  return buf.toString('latin1', i, end);
}

/**
 * Search one buffer (guest-physical `gpa` at byte 0). Fast pass: page starts and the ELF-note text offset;
 * then a full scan. Returns the first valid VMCOREINFO.
 */
export function findVmcoreinfoInBuffer(buf: Buffer, gpa = 0n, opts: { fullScan?: boolean } = {}): Omit<VmcoreInfo, 'ms'> | null {
  const fast = [0, 24];
  for (let page = 0; page < buf.length; page += 4096) {
    for (const o of fast) {
      const i = page + o;
      if (i + MARK.length <= buf.length && buf[i] === 0x4f && buf.compare(MARK, 0, MARK.length, i, i + MARK.length) === 0) {
        const info = parseVmcoreinfo(textAt(buf, i), gpa + BigInt(i));
        if (info) return info;
      }
    }
  }
  if (opts.fullScan === false) return null;
  for (let i = buf.indexOf(MARK); i >= 0; i = buf.indexOf(MARK, i + 1)) {
    const info = parseVmcoreinfo(textAt(buf, i), gpa + BigInt(i));
    if (info) return info;
  }
  return null;
}

function viewOf(r: PhysRange, off: bigint, len: bigint): Buffer {
  return Buffer.from(koffi.view(r.host + off, Number(len)) as ArrayBuffer);
}

/**
 * Find VMCOREINFO in a backend's physical memory (page-aligned candidates first over all RAM, then a full scan).
 * Returns null when it is not there (kernel without CONFIG_CRASH_CORE, or not booted far enough).
 */
export function findVmcoreinfo(backend: MemoryBackend): VmcoreInfo | null {
  const t = performance.now();
  const ranges = backend.ranges();
  for (const fullScan of [false, true]) {
    for (const r of ranges) {
      for (let off = 0n; off < r.length; off += CHUNK) {
        // overlap chunks by MAX_TEXT so a text across a chunk boundary is seen whole
        const len = (off + CHUNK + BigInt(MAX_TEXT) > r.length ? r.length - off : CHUNK + BigInt(MAX_TEXT));
        const buf = viewOf(r, off, len);
        const found = fullScan
          ? findFull(buf, r.gpa + off)
          : findVmcoreinfoInBuffer(buf, r.gpa + off, { fullScan: false });
        if (found) return { ...found, ms: performance.now() - t };
      }
    }
  }
  return null;
}

function findFull(buf: Buffer, gpa: bigint): Omit<VmcoreInfo, 'ms'> | null {
  for (let i = buf.indexOf(MARK); i >= 0; i = buf.indexOf(MARK, i + 1)) {
    const info = parseVmcoreinfo(textAt(buf, i), gpa + BigInt(i));
    if (info) return info;
  }
  return null;
}

/** The start of the kernel-image mapping (__START_KERNEL_map) and its size on x86-64. */
const KERNEL_MAP_START = 0xffffffff80000000n;
const KERNEL_MAP_END = 0xffffffffc0000000n;
const TWO_MIB = 0x200000n;

export interface SlideResult {
  /** KASLR slide: runtime _text minus System.map _text */
  slide: bigint;
  text: bigint;
  ms: number;
}

/**
 * The KASLR slide from the guest's page tables: the kernel image is mapped in 2 MiB steps from _text,
 * so the first present 2 MiB slot in __START_KERNEL_map is _text (DESIGN.md: agreed with VMCOREINFO on
 * every run, ~1 ms). `translate` is a page walk from the guest's CR3 that throws when not mapped.
 */
export function findSlideFromPageTables(translate: (va: bigint) => bigint, systemMapText: bigint): SlideResult | null {
  const t0 = performance.now();
  for (let va = KERNEL_MAP_START; va < KERNEL_MAP_END; va += TWO_MIB) {
    try {
      translate(va);
    } catch {
      continue;
    }
    return { slide: va - systemMapText, text: va, ms: performance.now() - t0 };
  }
  return null;
}
