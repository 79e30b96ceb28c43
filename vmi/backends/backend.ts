// The one small interface every guest-memory backend implements (LibVMI's driver idea, kept small):
// physical memory, registers, pause/resume, memory size. Backends live one per file in this folder.

/** A run of guest-physical memory that is mapped read-only into this process. */
export interface PhysRange {
  /** guest-physical start address */
  gpa: bigint;
  /** length in bytes */
  length: bigint;
  /** host address of the first byte (a read-only mmap owned by the backend) */
  host: bigint;
}

export interface GuestRegisters {
  /** page-table root; bit 12 (PTI user copy) and the low flag bits are already masked off */
  cr3: bigint;
  cr4: bigint;
}

export interface MemoryBackend {
  /** short name for messages: 'raw', 'elf-core', 'qemu', 'xen', ... */
  readonly kind: string;
  /** Guest RAM as host-mapped ranges, sorted by gpa, non-overlapping. */
  ranges(): PhysRange[];
  /** Total guest RAM in bytes (sum of the ranges). */
  memorySize(): bigint;
  /** CR3/CR4 of a vCPU (any vCPU works for kernel addresses). */
  registers(): Promise<GuestRegisters>;
  /**
   * Pause the vCPUs (consistent sample): true when this call paused them, false when it did nothing
   * (a dump, or a VM already paused by someone else -- which is then not resumed either).
   */
  pause(): Promise<boolean>;
  resume(): Promise<void>;
  /** Throw (GuestStateError) when the guest is gone or was reset since open; cheap, called before each sample. Optional. */
  checkAlive?(): void;
  /** Unmap and release everything. */
  close(): Promise<void>;
}
