// Memory backend: an ELF core of guest physical memory, as QEMU's dump-guest-memory, `virsh dump
// --memory-only` and kdump write it. PT_LOAD program headers map physical ranges (p_paddr) to file
// offsets; the "QEMU" notes carry each vCPU's QEMUCPUState, from which CR3/CR4 come (the kernel's own
// root preferred, as for a live QEMU: vmi/kernel-root.ts).
// Every header field is checked against the file size: a corrupt dump gives BadInputError, never a crash.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { BadInputError } from '../../common/errors.ts';
import type { GuestRegisters, MemoryBackend, PhysRange } from './backend.ts';
import { mapFileReadOnly, type FileMapping } from './mmap.ts';
import { kernelRoot } from '../kernel-root.ts';

const PT_LOAD = 1;
const PT_NOTE = 4;
const QEMU_CPUSTATE_CR_OFFSET = 392; // after version,size, 18 GPRs, 10 segment descriptors of 24 bytes
const MAX_HEADER_BYTES = 16 << 20;

export interface ElfLoad {
  gpa: bigint;
  fileOffset: bigint;
  length: bigint;
}

export interface ElfCoreInfo {
  loads: ElfLoad[];
  /** per vCPU, from the QEMU notes */
  cpus: GuestRegisters[];
  /** VMCOREINFO note text, when present */
  vmcoreinfo?: string;
}

/** Parse the ELF header, program headers and notes of a core file (reads headers only). */
export function readElfCoreInfo(path: string): ElfCoreInfo {
  const fd = openSync(path, 'r');
  try {
    const size = BigInt(fstatSync(fd).size);
    const read = (off: bigint, len: number): Buffer => {
      if (off < 0n || len < 0 || off + BigInt(len) > size || len > MAX_HEADER_BYTES) {
        throw new BadInputError(path, `header points outside the file (offset ${off}, ${len} bytes, file ${size} bytes)`);
      }
      const b = Buffer.alloc(len);
      readSync(fd, b, 0, len, Number(off));
      return b;
    };
    const eh = read(0n, 64);
    if (eh.readUInt32BE(0) !== 0x7f454c46) throw new BadInputError(path, 'not an ELF file');
    if (eh[4] !== 2 || eh[5] !== 1) throw new BadInputError(path, 'not a 64-bit little-endian ELF file');
    if (eh.readUInt16LE(16) !== 4) throw new BadInputError(path, `ELF type ${eh.readUInt16LE(16)} is not a core file`);
    const phoff = eh.readBigUInt64LE(32);
    const phentsize = eh.readUInt16LE(54);
    let phnum = eh.readUInt16LE(56);
    if (phentsize !== 56) throw new BadInputError(path, `unexpected program header size ${phentsize}`);
    if (phnum === 0xffff) {
      // PN_XNUM: the real count is in section header 0's sh_info (dumps with many ranges)
      const shoff = eh.readBigUInt64LE(40);
      phnum = read(shoff, 64).readUInt32LE(44);
    }
    const ph = read(phoff, phnum * 56);
    const info: ElfCoreInfo = { loads: [], cpus: [] };
    for (let i = 0; i < phnum; i++) {
      const o = i * 56;
      const type = ph.readUInt32LE(o);
      const offset = ph.readBigUInt64LE(o + 8);
      const paddr = ph.readBigUInt64LE(o + 24);
      const filesz = ph.readBigUInt64LE(o + 32);
      if (type === PT_LOAD && filesz > 0n) {
        if (offset + filesz > size) throw new BadInputError(path, `PT_LOAD ${i} extends past the end of the file (truncated dump?)`);
        info.loads.push({ gpa: paddr, fileOffset: offset, length: filesz });
      } else if (type === PT_NOTE && filesz > 0n) {
        parseNotes(path, read(offset, Number(filesz)), info);
      }
    }
    if (info.loads.length === 0) throw new BadInputError(path, 'no PT_LOAD segments: not a memory dump');
    info.loads.sort((a, b) => (a.gpa < b.gpa ? -1 : a.gpa > b.gpa ? 1 : 0));
    for (let i = 1; i < info.loads.length; i++) {
      const prev = info.loads[i - 1];
      if (prev.gpa + prev.length > info.loads[i].gpa) throw new BadInputError(path, `PT_LOAD ranges overlap at 0x${info.loads[i].gpa.toString(16)}`);
    }
    return info;
  } finally {
    closeSync(fd);
  }
}

function parseNotes(path: string, buf: Buffer, info: ElfCoreInfo): void {
  let o = 0;
  const align4 = (n: number) => (n + 3) & ~3;
  while (o + 12 <= buf.length) {
    const namesz = buf.readUInt32LE(o);
    const descsz = buf.readUInt32LE(o + 4);
    const nameStart = o + 12;
    const descStart = nameStart + align4(namesz);
    const end = descStart + align4(descsz);
    if (namesz > 4096 || descsz > buf.length || end > buf.length) throw new BadInputError(path, 'malformed ELF note');
    const name = buf.toString('latin1', nameStart, nameStart + Math.max(0, namesz - 1));
    const desc = buf.subarray(descStart, descStart + descsz);
    if (name === 'QEMU' && descsz >= QEMU_CPUSTATE_CR_OFFSET + 40) {
      info.cpus.push({ cr3: desc.readBigUInt64LE(QEMU_CPUSTATE_CR_OFFSET + 24), cr4: desc.readBigUInt64LE(QEMU_CPUSTATE_CR_OFFSET + 32) });
    } else if (name === 'VMCOREINFO') {
      info.vmcoreinfo = desc.toString('latin1');
    }
    o = end;
  }
}

export class ElfCoreBackend implements MemoryBackend {
  readonly kind = 'elf-core';
  readonly info: ElfCoreInfo;
  private readonly maps: { load: ElfLoad; map: FileMapping; host: bigint }[] = [];

  constructor(readonly path: string) {
    this.info = readElfCoreInfo(path);
    try {
      for (const load of this.info.loads) {
        // mmap needs a page-aligned file offset: map from the page start and skip the head.
        const head = Number(load.fileOffset % 4096n);
        const map = mapFileReadOnly(path, Number(load.fileOffset) - head, Number(load.length) + head);
        this.maps.push({ load, map, host: map.host + BigInt(head) });
      }
    } catch (e) {
      for (const m of this.maps) m.map.unmap();
      throw e;
    }
  }

  ranges(): PhysRange[] {
    return this.maps.map(({ load, host }) => ({ gpa: load.gpa, length: load.length, host }));
  }

  memorySize(): bigint {
    return this.info.loads.reduce((s, l) => s + l.length, 0n);
  }

  /**
   * The page-table root to walk kernel addresses with: the kernel's own init_top_pgt (VMCOREINFO in
   * the dump's RAM), else the vCPU whose CR3 maps the most of the kernel half -- not the first vCPU's,
   * which may be a user process's table without the kernel half, or freed (vmi/kernel-root.ts).
   */
  async registers(): Promise<GuestRegisters> {
    if (!this.info.cpus.some((c) => c.cr3 !== 0n)) throw new BadInputError(this.path, 'the dump has no QEMU CPU-state note with a CR3 (not written by QEMU?)');
    const v = kernelRoot(this, this.info.cpus);
    return { cr3: v.cr3, cr4: v.cr4 };
  }

  async pause(): Promise<boolean> {
    return false;
  }
  async resume(): Promise<void> {}

  async close(): Promise<void> {
    for (const m of this.maps) m.map.unmap();
  }
}
