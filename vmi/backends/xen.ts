// Memory backend: a Xen domain, guest RAM through foreign mappings (libxenforeignmemory), registers and pause
// through libxenctrl, from a Dom0 (or a domain with the right privileges).
//
// The libraries are loaded at run time through koffi, so the project builds and runs without
// them; opening the backend fails with a clear message when /dev/xen/privcmd or a library is absent.
//
// Guest RAM layout (ranges()): one contiguous PROT_NONE address reservation of
// (max_gpfn + 1) pages is made, and the guest's frames are mapped into it at
// reservation + gfn * 4096 in batches (xenforeignmemory_map2 with MAP_FIXED, PROT_READ). Frames
// Xen refuses (holes: VGA/MMIO/PCI hole, ballooned-out pages) stay unmapped; the per-frame error
// array tells which, and ranges() reports the runs of mapped frames, so "host = base + gpa" holds
// for every range. Mapping is eager at open() (bounded per call by batchFrames) because the
// MemoryBackend interface hands out host addresses synchronously; docs/xen.md describes the
// lazy variant (map a batch on the first miss in the g_map slow path) as an interface extension.
//
// Supported guests: HVM and PVH (hvm_guest flag). PV guests are refused: their CR3 holds a
// machine frame number and their page tables machine addresses, which this runtime does not translate.

import { existsSync } from 'node:fs';
import { ToolError } from '../../common/errors.ts';
import type { GuestRegisters, MemoryBackend, PhysRange } from './backend.ts';
import { kernelRoot } from '../kernel-root.ts';

/** Struct layouts and constants of Xen 4.17's public headers (checked against them by test/xen). */
export const XEN_ABI = {
  /** struct hvm_hw_cpu (xen/arch-x86/hvm/save.h) */
  hvmHwCpu: { size: 1032, cr0: 656, cr3: 672, cr4: 680 },
  /** xc_domaininfo_t = struct xen_domctl_getdomaininfo, XEN_DOMCTL_INTERFACE_VERSION 0x15 */
  domainInfo: { size: 112, domain: 0, flags: 4, totPages: 8, maxPages: 16, nrOnlineVcpus: 64, maxVcpuId: 68 },
  HVM_SAVE_CODE_CPU: 2,
  XEN_DOMINF_dying: 1 << 0,
  XEN_DOMINF_hvm_guest: 1 << 1,
  XEN_DOMINF_shutdown: 1 << 2,
  XEN_DOMINF_paused: 1 << 3,
  PAGE_SHIFT: 12,
} as const;

export const XEN_LIBRARIES = { foreignmemory: 'libxenforeignmemory.so.1', ctrl: 'libxenctrl.so.4.17' } as const;
export const PRIVCMD = '/dev/xen/privcmd';

const PAGE = 4096;
const PROT_NONE = 0;
const PROT_READ = 1;
const MAP_SHARED = 0x01;
const MAP_PRIVATE = 0x02;
const MAP_FIXED = 0x10;
const MAP_ANONYMOUS = 0x20;
const MAP_NORESERVE = 0x4000;
const MAP_FAILED = (1n << 64n) - 1n;

/** The C functions the backend calls, as an object so tests can substitute a fake. */
export interface XenLibs {
  fmemOpen(): bigint | null;
  fmemClose(fmem: bigint): number;
  /** xenforeignmemory_map2(fmem, dom, addr, prot, flags, pages, arr, err) */
  fmemMap2(fmem: bigint, domid: number, addr: bigint, prot: number, flags: number, pfns: BigUint64Array, err: Int32Array): bigint | null;
  fmemUnmap(fmem: bigint, addr: bigint, pages: number): number;
  xcOpen(): bigint | null;
  xcClose(xch: bigint): number;
  /** xc_domain_getinfolist(xch, first, 1, buf): number of domains written */
  getDomainInfo(xch: bigint, domid: number, buf: Buffer): number;
  maximumGpfn(xch: bigint, domid: number, out: BigUint64Array): number;
  hvmGetContextPartial(xch: bigint, domid: number, typecode: number, instance: number, buf: Buffer): number;
  pause(xch: bigint, domid: number): number;
  unpause(xch: bigint, domid: number): number;
  /** an address-space reservation (PROT_NONE, no backing); at `at` exactly (MAP_FIXED) when given */
  reserve(bytes: bigint, at?: bigint): bigint | null;
  release(addr: bigint, bytes: bigint): number;
  errno(): number;
}

let loaded: XenLibs | undefined;

/** Load libxenforeignmemory and libxenctrl through koffi. Throws ToolError naming the library and the package. */
export async function loadXenLibs(names: { foreignmemory: string; ctrl: string } = XEN_LIBRARIES): Promise<XenLibs> {
  if (loaded && names === XEN_LIBRARIES) return loaded;
  let koffi: typeof import('koffi').default;
  try {
    koffi = (await import('koffi')).default;
  } catch (e) {
    throw new ToolError('koffi', `cannot load the FFI module: ${String(e)}`);
  }
  const load = (name: string, pkg: string) => {
    try {
      return koffi.load(name);
    } catch (e) {
      throw new ToolError('xen', `cannot load ${name} (${(e as Error).message}); on Debian 12: apt-get install ${pkg}`);
    }
  };
  const fm = load(names.foreignmemory, 'libxenforeignmemory1');
  const xc = load(names.ctrl, 'libxenmisc4.17');
  const libc = load('libc.so.6', 'libc6');
  const fn = (lib: ReturnType<typeof koffi.load>, libName: string, proto: string) => {
    try {
      return lib.func(proto);
    } catch (e) {
      throw new ToolError('xen', `${libName} lacks ${proto.replace(/\(.*/, '')} (${(e as Error).message}): not Xen 4.17's ABI`);
    }
  };
  const f = {
    fmOpen: fn(fm, names.foreignmemory, 'void *xenforeignmemory_open(void *logger, unsigned int open_flags)'),
    fmClose: fn(fm, names.foreignmemory, 'int xenforeignmemory_close(void *fmem)'),
    fmMap2: fn(fm, names.foreignmemory, 'void *xenforeignmemory_map2(void *fmem, uint32_t dom, void *addr, int prot, int flags, size_t pages, const uint64_t *arr, _Out_ int *err)'),
    fmUnmap: fn(fm, names.foreignmemory, 'int xenforeignmemory_unmap(void *fmem, void *addr, size_t pages)'),
    xcOpen: fn(xc, names.ctrl, 'void *xc_interface_open(void *logger, void *dombuild_logger, unsigned int open_flags)'),
    xcClose: fn(xc, names.ctrl, 'int xc_interface_close(void *xch)'),
    getinfolist: fn(xc, names.ctrl, 'int xc_domain_getinfolist(void *xch, uint32_t first_domain, unsigned int max_domains, _Out_ uint8_t *info)'),
    maxGpfn: fn(xc, names.ctrl, 'int xc_domain_maximum_gpfn(void *xch, uint32_t domid, _Out_ uint64_t *gpfns)'),
    hvmCtx: fn(xc, names.ctrl, 'int xc_domain_hvm_getcontext_partial(void *xch, uint32_t domid, uint16_t typecode, uint16_t instance, _Out_ uint8_t *ctxt_buf, uint32_t size)'),
    pause: fn(xc, names.ctrl, 'int xc_domain_pause(void *xch, uint32_t domid)'),
    unpause: fn(xc, names.ctrl, 'int xc_domain_unpause(void *xch, uint32_t domid)'),
    mmap: fn(libc, 'libc.so.6', 'void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)'),
    munmap: fn(libc, 'libc.so.6', 'int munmap(void *addr, size_t length)'),
  };
  const libs: XenLibs = {
    fmemOpen: () => f.fmOpen(null, 0),
    fmemClose: (h) => f.fmClose(h),
    fmemMap2: (h, dom, addr, prot, flags, pfns, err) => f.fmMap2(h, dom, addr, prot, flags, pfns.length, pfns, err),
    fmemUnmap: (h, addr, pages) => f.fmUnmap(h, addr, pages),
    xcOpen: () => f.xcOpen(null, null, 0),
    xcClose: (h) => f.xcClose(h),
    getDomainInfo: (h, domid, buf) => f.getinfolist(h, domid, 1, buf),
    maximumGpfn: (h, domid, out) => f.maxGpfn(h, domid, out),
    hvmGetContextPartial: (h, domid, code, inst, buf) => f.hvmCtx(h, domid, code, inst, buf, buf.length),
    pause: (h, domid) => f.pause(h, domid),
    unpause: (h, domid) => f.unpause(h, domid),
    reserve: (bytes, at) => {
      const flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | (at !== undefined ? MAP_FIXED : 0);
      const p: bigint | null = f.mmap(at ?? null, bytes, PROT_NONE, flags, -1, 0);
      return p === null || p === MAP_FAILED ? null : p;
    },
    release: (addr, bytes) => f.munmap(addr, bytes),
    errno: () => koffi.errno(),
  };
  if (names === XEN_LIBRARIES) loaded = libs;
  return libs;
}

/** Split frames [0, frames) into batches of at most `batch` frames. */
export function planBatches(frames: number, batch: number): { first: number; count: number }[] {
  if (!Number.isSafeInteger(frames) || frames < 0) throw new RangeError(`bad frame count ${frames}`);
  if (!Number.isSafeInteger(batch) || batch < 1) throw new RangeError(`bad batch size ${batch}`);
  const out: { first: number; count: number }[] = [];
  for (let first = 0; first < frames; first += batch) out.push({ first, count: Math.min(batch, frames - first) });
  return out;
}

/**
 * Turn per-frame results into ranges: `ok(gfn)` tells whether frame gfn is mapped; consecutive
 * mapped frames form one range; host = base + gpa.
 */
export function rangesFromFrames(frames: number, ok: (gfn: number) => boolean, base: bigint): PhysRange[] {
  const out: PhysRange[] = [];
  let start = -1;
  for (let g = 0; g <= frames; g++) {
    const m = g < frames && ok(g);
    if (m && start < 0) start = g;
    else if (!m && start >= 0) {
      const gpa = BigInt(start) * BigInt(PAGE);
      out.push({ gpa, length: BigInt(g - start) * BigInt(PAGE), host: base + gpa });
      start = -1;
    }
  }
  return out;
}

/** CR3 as the page walk wants it: frame address only, bit 12 (PTI user copy) and PCID/flags masked off. */
export function maskCr3(cr3: bigint): bigint {
  return cr3 & 0x000f_ffff_ffff_e000n;
}

function strerror(errno: number): string {
  const names: Record<number, string> = { 1: 'EPERM', 2: 'ENOENT', 3: 'ESRCH', 12: 'ENOMEM', 13: 'EACCES', 14: 'EFAULT', 16: 'EBUSY', 22: 'EINVAL', 95: 'EOPNOTSUPP' };
  return names[errno] ? `${names[errno]} (errno ${errno})` : `errno ${errno}`;
}

export interface XenOpenOptions {
  /** default /dev/xen/privcmd (tests point it elsewhere) */
  privcmd?: string;
  /** default: loadXenLibs() */
  libs?: XenLibs;
  /** frames per xenforeignmemory_map2 call; default 4096 (16 MiB) */
  batchFrames?: number;
  /** the one vCPU whose CR3 is walked; default: the kernel's own root (init_top_pgt via VMCOREINFO), else the vCPU mapping the most of the kernel half (vmi/kernel-root.ts) */
  vcpu?: number;
}

export interface DomainInfo {
  domid: number;
  flags: number;
  hvm: boolean;
  paused: boolean;
  dying: boolean;
  totPages: bigint;
  maxPages: bigint;
  onlineVcpus: number;
  maxVcpuId: number;
}

export function parseDomainInfo(buf: Buffer): DomainInfo {
  const L = XEN_ABI.domainInfo;
  const flags = buf.readUInt32LE(L.flags);
  return {
    domid: buf.readUInt16LE(L.domain),
    flags,
    hvm: (flags & XEN_ABI.XEN_DOMINF_hvm_guest) !== 0,
    paused: (flags & XEN_ABI.XEN_DOMINF_paused) !== 0,
    dying: (flags & XEN_ABI.XEN_DOMINF_dying) !== 0,
    totPages: buf.readBigUInt64LE(L.totPages),
    maxPages: buf.readBigUInt64LE(L.maxPages),
    onlineVcpus: buf.readUInt32LE(L.nrOnlineVcpus),
    maxVcpuId: buf.readUInt32LE(L.maxVcpuId),
  };
}

export class XenBackend implements MemoryBackend {
  readonly kind = 'xen';
  private closed = false;
  private pausedByUs = 0;

  private constructor(
    readonly domid: number,
    private readonly libs: XenLibs,
    private readonly xch: bigint,
    private readonly fmem: bigint,
    private readonly base: bigint,
    private readonly reservedBytes: bigint,
    private readonly mapped: { first: number; count: number }[],
    private readonly physRanges: PhysRange[],
    private readonly vcpu: number | undefined,
    readonly info: DomainInfo,
  ) {}

  /** Open domain `domid`: check the environment, load the libraries, map the guest's RAM. */
  static async open(domid: number, opts: XenOpenOptions = {}): Promise<XenBackend> {
    if (!Number.isInteger(domid) || domid < 1 || domid > 0x7fef) throw new ToolError('xen', `bad domain id ${domid} (a guest domid is 1..32751)`);
    const privcmd = opts.privcmd ?? PRIVCMD;
    if (!existsSync(privcmd))
      throw new ToolError(
        'xen',
        `${privcmd} is absent: this is not a Xen Dom0 (no Xen hypervisor, or the xen_privcmd driver is not loaded; try modprobe xen-privcmd and mount -t xenfs xenfs /proc/xen)`,
      );
    const libs = opts.libs ?? (await loadXenLibs());
    const batch = opts.batchFrames ?? 4096;
    const vcpu = opts.vcpu;

    const xch = libs.xcOpen();
    if (xch === null || xch === 0n) throw new ToolError('xen', `xc_interface_open failed: ${strerror(libs.errno())} (run as root in Dom0)`);
    let fmem: bigint | null = null;
    let base: bigint | null = null;
    let reserved = 0n;
    const mapped: { first: number; count: number }[] = [];
    try {
      const ib = Buffer.alloc(XEN_ABI.domainInfo.size);
      const n = libs.getDomainInfo(xch, domid, ib);
      const info = parseDomainInfo(ib);
      if (n < 1 || info.domid !== domid) throw new ToolError('xen', `no domain ${domid} (xl list shows the running domains)`);
      if (info.dying) throw new ToolError('xen', `domain ${domid} is dying`);
      if (!info.hvm) throw new ToolError('xen', `domain ${domid} is a PV guest: only HVM and PVH guests are supported (a PV CR3 holds machine frames)`);
      if (vcpu !== undefined && vcpu > info.maxVcpuId) throw new ToolError('xen', `domain ${domid} has no vCPU ${vcpu} (max ${info.maxVcpuId})`);

      const g = new BigUint64Array(1);
      if (libs.maximumGpfn(xch, domid, g) < 0) throw new ToolError('xen', `xc_domain_maximum_gpfn(${domid}) failed: ${strerror(libs.errno())}`);
      const frames = Number(g[0]) + 1;
      if (!Number.isSafeInteger(frames) || frames > 2 ** 40) throw new ToolError('xen', `domain ${domid}: implausible maximum gpfn ${g[0]}`);

      fmem = libs.fmemOpen();
      if (fmem === null || fmem === 0n) throw new ToolError('xen', `xenforeignmemory_open failed: ${strerror(libs.errno())}`);
      reserved = BigInt(frames) * BigInt(PAGE);
      base = libs.reserve(reserved);
      if (base === null) throw new ToolError('xen', `cannot reserve ${reserved} bytes of address space: ${strerror(libs.errno())}`);

      const okBits = new Uint8Array(frames);
      for (const b of planBatches(frames, batch)) {
        const pfns = new BigUint64Array(b.count);
        for (let i = 0; i < b.count; i++) pfns[i] = BigInt(b.first + i);
        const err = new Int32Array(b.count);
        const addr = base + BigInt(b.first) * BigInt(PAGE);
        const p = libs.fmemMap2(fmem, domid, addr, PROT_READ, MAP_SHARED | MAP_FIXED, pfns, err);
        if (p === null || p === 0n) {
          // the whole batch failed (not per-frame errors): the range stays PROT_NONE in the reservation
          const e = libs.errno();
          if (e === 1 || e === 13) throw new ToolError('xen', `xenforeignmemory_map2(dom ${domid}) refused: ${strerror(e)} (needs Dom0 privileges)`);
          // libxenforeignmemory munmaps the range on failure: take it back into the reservation so
          // nothing else gets mapped inside it (and the final munmap of the whole reservation stays ours)
          if (libs.reserve(BigInt(b.count) * BigInt(PAGE), addr) !== addr)
            throw new ToolError('xen', `cannot re-reserve 0x${addr.toString(16)} after a failed map: ${strerror(libs.errno())}`);
          continue;
        }
        if (p !== addr) throw new ToolError('xen', `xenforeignmemory_map2 ignored MAP_FIXED (wanted 0x${addr.toString(16)}, got 0x${p.toString(16)})`);
        mapped.push(b);
        for (let i = 0; i < b.count; i++) if (err[i] === 0) okBits[b.first + i] = 1;
      }
      const ranges = rangesFromFrames(frames, (gfn) => okBits[gfn] === 1, base);
      if (ranges.length === 0) throw new ToolError('xen', `domain ${domid}: no guest frame could be mapped`);
      return new XenBackend(domid, libs, xch, fmem, base, reserved, mapped, ranges, vcpu, info);
    } catch (e) {
      if (fmem !== null && fmem !== 0n) {
        for (const b of mapped) libs.fmemUnmap(fmem, base! + BigInt(b.first) * BigInt(PAGE), b.count);
        libs.fmemClose(fmem);
      }
      if (base !== null) libs.release(base, reserved);
      libs.xcClose(xch);
      throw e;
    }
  }

  ranges(): PhysRange[] {
    return this.physRanges;
  }

  memorySize(): bigint {
    return this.physRanges.reduce((s, r) => s + r.length, 0n);
  }

  async registers(): Promise<GuestRegisters> {
    this.check();
    if (this.vcpu !== undefined) return this.vcpuRegisters(this.vcpu);
    // every vCPU the domain has (an offline one has no context: skipped), then the kernel's root
    const all: GuestRegisters[] = [];
    let first: unknown;
    for (let v = 0; v <= this.info.maxVcpuId; v++) {
      try {
        all.push(this.vcpuRegisters(v));
      } catch (e) {
        first ??= e;
      }
    }
    if (all.length === 0) throw first;
    const r = kernelRoot(this, all);
    return { cr3: r.cr3, cr4: r.cr4 };
  }

  private vcpuRegisters(vcpu: number): GuestRegisters {
    const L = XEN_ABI.hvmHwCpu;
    const buf = Buffer.alloc(L.size);
    const rc = this.libs.hvmGetContextPartial(this.xch, this.domid, XEN_ABI.HVM_SAVE_CODE_CPU, vcpu, buf);
    if (rc < 0) throw new ToolError('xen', `xc_domain_hvm_getcontext_partial(dom ${this.domid}, CPU, vcpu ${vcpu}) failed: ${strerror(this.libs.errno())}`);
    return { cr3: maskCr3(buf.readBigUInt64LE(L.cr3)), cr4: buf.readBigUInt64LE(L.cr4) };
  }

  /** Xen's pause count nests: an operator's own pause survives our pause/unpause pair. */
  async pause(): Promise<boolean> {
    this.check();
    if (this.libs.pause(this.xch, this.domid) < 0) throw new ToolError('xen', `xc_domain_pause(${this.domid}) failed: ${strerror(this.libs.errno())}`);
    this.pausedByUs++;
    return true;
  }

  async resume(): Promise<void> {
    this.check();
    if (this.pausedByUs === 0) return;
    if (this.libs.unpause(this.xch, this.domid) < 0) throw new ToolError('xen', `xc_domain_unpause(${this.domid}) failed: ${strerror(this.libs.errno())}`);
    this.pausedByUs--;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    // never leave a guest paused behind us (Xen's pause count is nested)
    while (this.pausedByUs > 0) {
      this.libs.unpause(this.xch, this.domid);
      this.pausedByUs--;
    }
    this.closed = true;
    for (const b of this.mapped) this.libs.fmemUnmap(this.fmem, this.base + BigInt(b.first) * BigInt(PAGE), b.count);
    this.libs.fmemClose(this.fmem);
    this.libs.release(this.base, this.reservedBytes);
    this.libs.xcClose(this.xch);
  }

  private check() {
    if (this.closed) throw new ToolError('xen', `backend of domain ${this.domid} is closed`);
  }
}
