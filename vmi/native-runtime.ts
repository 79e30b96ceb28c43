// The Node side of the native runtime (vmi/native/rt.c) inside a monitor shared object, or inside
// libciel_rt.so for page-table tools. Loads the .so through koffi, attaches a memory backend, fills the
// kernel-symbol slots and calls exported monitor functions with fault containment.
import koffi, { type LibraryHandle } from 'koffi';

type KoffiFunction = ReturnType<LibraryHandle['func']>;
import { existsSync } from 'node:fs';
import type { GuestRegisters, MemoryBackend } from './backends/backend.ts';
import { BadInputError, CielError, GuestFaultError } from '../common/errors.ts';

// Registered by name for the signatures below ('ciel_fault *', 'ciel_stats *').
koffi.struct('ciel_fault', { gva: 'uint64_t', detail: 'uint64_t', code: 'uint32_t', level: 'uint32_t' });
koffi.struct('ciel_stats', {
  accesses: 'uint64_t',
  misses: 'uint64_t',
  walks: 'uint64_t',
  bounced: 'uint64_t',
  pages: 'uint64_t',
});

export interface CallStats {
  /** translated guest accesses in the call */
  accesses: number;
  /** accesses that missed the software TLB */
  misses: number;
  walks: number;
  /** page-crossing accesses assembled in the bounce buffer */
  bounced: number;
  /** distinct guest pages touched */
  pages: number;
  tlbHitRatio: number;
}

export const FAULT_REASONS: Record<number, string> = {
  1: 'page not present',
  2: 'outside guest RAM',
  3: 'non-canonical address',
  4: 'not a kernel address (NULL or user half)',
  5: 'load budget exhausted (cyclic or huge structure?)',
  6: 'single access too large',
  7: 'reserved bit set in a page-table entry',
  8: 'monitor trapped (llvm.trap)',
  9: 'no VM attached',
};

interface RawFault {
  gva: bigint | number;
  detail: bigint | number;
  code: number;
  level: number;
}

function toFaultError(f: RawFault): GuestFaultError {
  const gva = BigInt(f.gva);
  const detail = BigInt(f.detail);
  let reason = FAULT_REASONS[f.code] ?? `fault ${f.code}`;
  if (f.level) reason += ` (level ${f.level}, ${f.code === 2 ? 'phys' : 'entry'} 0x${detail.toString(16)})`;
  else if (f.code === 2) reason += ` (phys 0x${detail.toString(16)})`;
  return new GuestFaultError(gva, reason, f.code);
}

export const DEFAULT_BUDGET = 50_000_000;

// A shared object is loaded once per process, so its runtime state (current VM, TLB, slot table) is
// shared by every NativeRuntime on it; the owner of that state is tracked here and switched on call.
const owners = new Map<string, NativeRuntime>();

export class NativeRuntime {
  private readonly lib: LibraryHandle;
  private readonly fn: Record<string, KoffiFunction>;
  private vm: bigint | null = null;
  private slots: { symbol: string; values: bigint[] } | null = null;

  constructor(readonly soPath: string) {
    if (!existsSync(soPath)) throw new BadInputError(soPath, 'shared object not found (run `ciel build` first?)');
    this.lib = koffi.load(soPath);
    const l = this.lib;
    this.fn = {
      vmNew: l.func('void *ciel_vm_new()'),
      vmFree: l.func('void ciel_vm_free(void *vm)'),
      addRange: l.func('int ciel_vm_add_range(void *vm, uint64_t gpa, uint64_t len, uint64_t host)'),
      setPaging: l.func('void ciel_vm_set_paging(void *vm, uint64_t cr3, uint64_t cr4)'),
      select: l.func('void ciel_select(void *vm)'),
      flushEach: l.func('void ciel_set_flush_each_call(int on)'),
      translate: l.func('int ciel_translate(void *vm, uint64_t va, _Out_ uint64_t *pa, _Out_ ciel_fault *f)'),
      readPhys: l.func('int ciel_read_phys(void *vm, uint64_t pa, _Out_ uint8_t *buf, uint64_t len)'),
      readVirt: l.func('int ciel_read_virt(void *vm, uint64_t va, _Out_ uint8_t *buf, uint64_t len, _Out_ ciel_fault *f)'),
      enter: l.func('int ciel_enter(uint64_t fn, void *out, uint64_t outLen, void *in, uint64_t inLen, int64_t budget, _Out_ long *result)'),
      lastFault: l.func('void ciel_last_fault(_Out_ ciel_fault *f)'),
      lastStats: l.func('void ciel_last_stats(_Out_ ciel_stats *s)'),
    };
  }

  /** Attach guest memory (all ranges of the backend) and paging registers; becomes the current VM. */
  attach(backend: MemoryBackend, regs: GuestRegisters): void {
    this.detach();
    const vm = this.fn.vmNew() as bigint;
    for (const r of backend.ranges()) {
      if (this.fn.addRange(vm, r.gpa, r.length, r.host) !== 0) {
        this.fn.vmFree(vm);
        throw new CielError(`${backend.kind}: cannot add range 0x${r.gpa.toString(16)}+0x${r.length.toString(16)} (overlap or too many)`);
      }
    }
    this.fn.setPaging(vm, regs.cr3, regs.cr4);
    this.vm = vm;
    this.activate(true);
  }

  /** Make this runtime's VM and slots the ones the shared object uses. */
  private activate(force = false): void {
    if (!force && owners.get(this.soPath) === this) return;
    this.fn.select(this.requireVm());
    if (this.slots) this.encodeU64s(this.slots.symbol, this.slots.values);
    owners.set(this.soPath, this);
  }

  /** New CR3/CR4 for the attached VM (e.g. after a guest reboot). */
  setPaging(regs: GuestRegisters): void {
    this.fn.setPaging(this.requireVm(), regs.cr3, regs.cr4);
    this.activate(true);
  }

  detach(): void {
    if (this.vm !== null) this.fn.vmFree(this.vm);
    this.vm = null;
    if (owners.get(this.soPath) === this) owners.delete(this.soPath);
  }

  /** Keep software-TLB entries across calls (faster; sound while kernel mappings do not change). */
  keepTlbAcrossCalls(on: boolean): void {
    this.fn.flushEach(on ? 0 : 1);
  }

  translate(va: bigint): bigint {
    this.activate();
    const pa = [0n];
    const f = [{}] as RawFault[];
    if (this.fn.translate(this.requireVm(), va, pa, f) !== 0) throw toFaultError(f[0]);
    return BigInt(pa[0]);
  }

  readVirt(va: bigint, len: number): Buffer {
    this.activate();
    const buf = Buffer.alloc(len);
    const f = [{}] as RawFault[];
    if (this.fn.readVirt(this.requireVm(), va, buf, len, f) !== 0) throw toFaultError(f[0]);
    return buf;
  }

  readPhys(pa: bigint, len: number): Buffer {
    const buf = Buffer.alloc(len);
    if (this.fn.readPhys(this.requireVm(), pa, buf, len) !== 0) {
      throw new GuestFaultError(pa, FAULT_REASONS[2], 2);
    }
    return buf;
  }

  /** Address of an exported symbol of the shared object (monitor function or data). */
  symbol(name: string): bigint {
    try {
      return BigInt(this.lib.symbol(name));
    } catch {
      throw new BadInputError(this.soPath, `no exported symbol '${name}'`);
    }
  }

  /** Fill the kernel-symbol slot table (kept, and written again whenever this runtime becomes active). */
  writeU64s(symbol: string, values: bigint[]): void {
    this.slots = { symbol, values: [...values] };
    this.encodeU64s(symbol, values);
    owners.set(this.soPath, this);
  }

  private encodeU64s(symbol: string, values: bigint[]): void {
    if (values.length === 0) return;
    koffi.encode(this.symbol(symbol), 0, koffi.array('uint64_t', values.length), values);
  }

  /**
   * Call `long name(void *out, unsigned long out_len, const void *in, unsigned long in_len)` with fault
   * containment. A guest fault throws GuestFaultError (with the guest address); the process is unharmed.
   */
  call(name: string, out: Buffer, input: Buffer | null = null, budget = DEFAULT_BUDGET): { result: number; stats: CallStats } {
    this.activate();
    const fnAddr = this.symbol(name);
    const result = [0];
    const code = this.fn.enter(fnAddr, out, out.length, input, input?.length ?? 0, budget, result) as number;
    const stats = this.stats();
    if (code !== 0) {
      const f = [{}] as RawFault[];
      this.fn.lastFault(f);
      throw toFaultError(f[0]);
    }
    return { result: Number(result[0]), stats };
  }

  stats(): CallStats {
    const s = [{}] as Record<string, bigint | number>[];
    this.fn.lastStats(s);
    const n = (k: string) => Number(s[0][k]);
    const accesses = n('accesses');
    return {
      accesses,
      misses: n('misses'),
      walks: n('walks'),
      bounced: n('bounced'),
      pages: n('pages'),
      tlbHitRatio: accesses ? 1 - n('misses') / accesses : 1,
    };
  }

  private requireVm(): bigint {
    if (this.vm === null) throw new CielError('no guest attached: call attach() first');
    return this.vm;
  }

  close(): void {
    this.detach();
    this.lib.unload();
  }
}
