// Backend: a raw physical-memory file (a QEMU memory-backend-file, or a raw dump), file offset = gpa.
// Registers cannot come from the file: pass CR3/CR4 (or find them: see vmi/kaslr.ts).
import { BadInputError } from '../../common/errors.ts';
import type { GuestRegisters, MemoryBackend, PhysRange } from './backend.ts';
import { mapFileReadOnly, type FileMapping } from './mmap.ts';

export interface RawFileOptions {
  registers?: GuestRegisters;
  /** guest-physical address of file offset 0 (default 0) */
  baseGpa?: bigint;
}

export class RawFileBackend implements MemoryBackend {
  readonly kind = 'raw';
  private readonly map: FileMapping;

  constructor(
    readonly path: string,
    private readonly opts: RawFileOptions = {},
  ) {
    this.map = mapFileReadOnly(path);
  }

  ranges(): PhysRange[] {
    return [{ gpa: this.opts.baseGpa ?? 0n, length: BigInt(this.map.length), host: this.map.host }];
  }

  memorySize(): bigint {
    return BigInt(this.map.length);
  }

  async registers(): Promise<GuestRegisters> {
    if (!this.opts.registers) throw new BadInputError(this.path, 'a raw memory file has no CPU registers: give CR3 (and CR4)');
    return this.opts.registers;
  }

  async pause(): Promise<void> {}
  async resume(): Promise<void> {}

  async close(): Promise<void> {
    this.map.unmap();
  }
}
