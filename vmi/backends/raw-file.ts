// Memory backend: a raw physical-memory file (a QEMU memory-backend-file, or a raw dump), file offset = gpa.
// Registers cannot come from the file: pass CR3/CR4, or take the kernel's own page-table root from the
// VMCOREINFO it left in RAM (openWithVmcoreinfo).
import { BadInputError } from '../../common/errors.ts';
import { findVmcoreinfo } from '../kaslr.ts';
import type { GuestRegisters, MemoryBackend, PhysRange } from './backend.ts';
import { mapFileReadOnly, type FileMapping } from './mmap.ts';

export interface RawFileOptions {
  registers?: GuestRegisters;
  /** guest-physical address of file offset 0 (default 0) */
  baseGpa?: bigint;
}

const START_KERNEL_MAP = 0xffffffff80000000n;

export class RawFileBackend implements MemoryBackend {
  readonly kind = 'raw';
  private readonly map: FileMapping;
  private regs: GuestRegisters | undefined;

  constructor(
    readonly path: string,
    private readonly opts: RawFileOptions = {},
  ) {
    this.map = mapFileReadOnly(path);
    this.regs = opts.registers;
  }

  /**
   * A raw file whose registers are the kernel's own page-table root, from the VMCOREINFO in its RAM:
   * SYMBOL(init_top_pgt) - __START_KERNEL_map + NUMBER(phys_base). Without one: BadInputError.
   */
  static openWithVmcoreinfo(path: string): RawFileBackend {
    const raw = new RawFileBackend(path);
    try {
      const info = findVmcoreinfo(raw);
      if (!info || info.initTopPgt === null || info.physBase === null)
        throw new BadInputError(path, 'no VMCOREINFO with SYMBOL(init_top_pgt) and NUMBER(phys_base) in this memory file: cannot find the page tables');
      raw.regs = { cr3: info.initTopPgt - START_KERNEL_MAP + info.physBase, cr4: info.pgtableL5 ? 1n << 12n : 0n };
      return raw;
    } catch (e) {
      void raw.close();
      throw e;
    }
  }

  ranges(): PhysRange[] {
    return [{ gpa: this.opts.baseGpa ?? 0n, length: BigInt(this.map.length), host: this.map.host }];
  }

  memorySize(): bigint {
    return BigInt(this.map.length);
  }

  async registers(): Promise<GuestRegisters> {
    if (!this.regs) throw new BadInputError(this.path, 'a raw memory file has no CPU registers: give CR3 (and CR4)');
    return this.regs;
  }

  async pause(): Promise<boolean> {
    return false;
  }
  async resume(): Promise<void> {}

  async close(): Promise<void> {
    this.map.unmap();
  }
}
