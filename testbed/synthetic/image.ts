// A synthetic guest: a physical memory image with real x86-64 page tables (4- or 5-level, 4 KiB,
// 2 MiB and 1 GiB pages, holes), written as a raw file or an ELF core. Unit tests of the page walker
// and of compiled readers use it; it never replaces the real-guest tests.
import { writeFileSync, openSync, writeSync, closeSync } from 'node:fs';

const P = 1n; // present
const RW = 2n;
const PS = 0x80n;
const ADDR = 0x000ffffffffff000n;
const KiB4 = 0x1000n;
const MiB2 = 0x200000n;
const GiB1 = 0x40000000n;

export class SyntheticGuest {
  readonly mem: Buffer;
  readonly root: bigint;
  private next: bigint; // bump allocator for physical pages

  constructor(
    readonly size: number,
    readonly la57 = false,
    firstFree = 0x100000n,
  ) {
    this.mem = Buffer.alloc(size);
    this.next = firstFree;
    this.root = this.allocPage();
  }

  get cr3(): bigint {
    return this.root;
  }

  get cr4(): bigint {
    return this.la57 ? 1n << 12n : 0n;
  }

  allocPage(): bigint {
    return this.allocPhys(KiB4, KiB4);
  }

  allocPhys(len: bigint, align: bigint): bigint {
    const pa = (this.next + align - 1n) & ~(align - 1n);
    if (pa + len > BigInt(this.size)) throw new Error(`synthetic guest out of memory (${len} bytes)`);
    this.next = pa + len;
    return pa;
  }

  private entry(table: bigint, idx: bigint): bigint {
    return this.mem.readBigUInt64LE(Number(table + idx * 8n));
  }

  setEntry(table: bigint, idx: bigint, v: bigint): void {
    this.mem.writeBigUInt64LE(v, Number(table + idx * 8n));
  }

  /** Table (physical) at `level` for va, creating intermediate tables down to that level. */
  private tableFor(va: bigint, level: number): bigint {
    let table = this.root;
    for (let lvl = this.la57 ? 5 : 4; lvl > level; lvl--) {
      const idx = (va >> BigInt(12 + 9 * (lvl - 1))) & 511n;
      let e = this.entry(table, idx);
      if (!(e & P)) {
        e = this.allocPage() | P | RW;
        this.setEntry(table, idx, e);
      }
      if (e & PS) throw new Error(`0x${va.toString(16)} is already inside a large page`);
      table = e & ADDR;
    }
    return table;
  }

  map(va: bigint, pa: bigint, pageSize: bigint): void {
    const level = pageSize === GiB1 ? 3 : pageSize === MiB2 ? 2 : 1;
    const table = this.tableFor(va, level);
    const idx = (va >> BigInt(12 + 9 * (level - 1))) & 511n;
    this.setEntry(table, idx, pa | P | RW | (level > 1 ? PS : 0n));
  }

  /** Allocate physical memory for [va, va+len) and map it with pages of `pageSize`. */
  mapNew(va: bigint, len: bigint, pageSize: bigint = KiB4): void {
    for (let off = 0n; off < len; off += pageSize) this.map(va + off, this.allocPhys(pageSize, pageSize), pageSize);
  }

  /** Independent (test-side) translation, used to place data. */
  virtToPhys(va: bigint): bigint {
    let table = this.root;
    for (let lvl = this.la57 ? 5 : 4; lvl >= 1; lvl--) {
      const shift = BigInt(12 + 9 * (lvl - 1));
      const e = this.entry(table, (va >> shift) & 511n);
      if (!(e & P)) throw new Error(`0x${va.toString(16)} not mapped (level ${lvl})`);
      if (lvl > 1 && e & PS) return (e & ADDR & ~((1n << shift) - 1n)) | (va & ((1n << shift) - 1n));
      table = e & ADDR;
    }
    return table | (va & 0xfffn);
  }

  write(va: bigint, data: Buffer): void {
    for (let i = 0; i < data.length; ) {
      const pa = this.virtToPhys(va + BigInt(i));
      const n = Math.min(data.length - i, 4096 - Number((va + BigInt(i)) & 0xfffn));
      data.copy(this.mem, Number(pa), i, i + n);
      i += n;
    }
  }

  writeU64(va: bigint, v: bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt.asUintN(64, v));
    this.write(va, b);
  }

  writeU32(va: bigint, v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    this.write(va, b);
  }

  saveRaw(path: string): void {
    writeFileSync(path, this.mem);
  }

  /**
   * Save as an ELF core like QEMU's dump-guest-memory: one PT_LOAD per physical range, a "QEMU" note
   * per vCPU with CR3/CR4. `holes` lists physical ranges left out of the dump.
   */
  saveElfCore(path: string, holes: [bigint, bigint][] = []): void {
    const ranges: [bigint, bigint][] = [];
    let start = 0n;
    for (const [hs, he] of [...holes].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
      if (hs > start) ranges.push([start, hs]);
      start = he;
    }
    if (start < BigInt(this.size)) ranges.push([start, BigInt(this.size)]);

    const desc = Buffer.alloc(432);
    desc.writeUInt32LE(1, 0); // version
    desc.writeUInt32LE(432, 4); // size
    desc.writeBigUInt64LE(this.cr3 | 0x1000n, 392 + 24); // a PTI user CR3, as a vCPU in user mode has
    desc.writeBigUInt64LE(this.cr4, 392 + 32);
    const name = Buffer.from('QEMU\0\0\0\0');
    const note = Buffer.alloc(12 + name.length + desc.length);
    note.writeUInt32LE(5, 0);
    note.writeUInt32LE(desc.length, 4);
    note.writeUInt32LE(0, 8);
    name.copy(note, 12);
    desc.copy(note, 12 + name.length);

    const phnum = 1 + ranges.length;
    const headerEnd = 64 + phnum * 56;
    const noteOff = headerEnd;
    let dataOff = BigInt(Math.ceil((noteOff + note.length) / 4096) * 4096 + 0x10); // deliberately not page aligned
    const eh = Buffer.alloc(64);
    eh.writeUInt32BE(0x7f454c46, 0);
    eh[4] = 2; // 64-bit
    eh[5] = 1; // little endian
    eh[6] = 1;
    eh.writeUInt16LE(4, 16); // ET_CORE
    eh.writeUInt16LE(62, 18); // x86-64
    eh.writeUInt32LE(1, 20);
    eh.writeBigUInt64LE(64n, 32); // phoff
    eh.writeUInt16LE(64, 52);
    eh.writeUInt16LE(56, 54);
    eh.writeUInt16LE(phnum, 56);
    const ph = Buffer.alloc(phnum * 56);
    ph.writeUInt32LE(4, 0); // PT_NOTE
    ph.writeBigUInt64LE(BigInt(noteOff), 8);
    ph.writeBigUInt64LE(BigInt(note.length), 32);
    ph.writeBigUInt64LE(BigInt(note.length), 40);
    const placed: [bigint, bigint, bigint][] = [];
    ranges.forEach(([s, e], i) => {
      const o = (i + 1) * 56;
      ph.writeUInt32LE(1, o); // PT_LOAD
      ph.writeBigUInt64LE(dataOff, o + 8);
      ph.writeBigUInt64LE(s, o + 24); // paddr
      ph.writeBigUInt64LE(e - s, o + 32);
      ph.writeBigUInt64LE(e - s, o + 40);
      placed.push([dataOff, s, e]);
      dataOff += e - s + 0x1000n; // gaps between segments in the file
    });
    const fd = openSync(path, 'w');
    try {
      writeSync(fd, eh, 0, 64, 0);
      writeSync(fd, ph, 0, ph.length, 64);
      writeSync(fd, note, 0, note.length, noteOff);
      for (const [off, s, e] of placed) writeSync(fd, this.mem, Number(s), Number(e - s), Number(off));
    } finally {
      closeSync(fd);
    }
  }
}

export const PAGE = { KiB4, MiB2, GiB1 };
