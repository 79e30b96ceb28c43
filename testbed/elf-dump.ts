// One real ELF dump of the test guest (QMP dump-guest-memory, paging false, format elf), taken once and
// cached in the tmp dir, and the fuzzer that corrupts it case by case: headers, program headers, notes,
// the CR3 notes, truncation, and guest memory (random pages, page-table pages, cgroup structures).
// Each case patches the dump in place with pwrite (or writes a small truncated copy), opens
// ElfCoreBackend + GuestMonitor, samples, and restores the bytes. Used by test/hostile/elf-fuzz.test.ts
// (a slice) and bench/fuzz-elf.ts (>= 10,000 cases).
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readdirSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildMonitor } from '../compiler/build.ts';
import { loadBtf } from '../compiler/kernel/btf.ts';
import { fetchKernel } from '../compiler/kernel/packages.ts';
import { ElfCoreBackend, readElfCoreInfo } from '../vmi/backends/elf-core.ts';
import { BadInputError, CielError, GuestFaultError } from '../common/errors.ts';
import { GuestMonitor } from '../vmi/guest-monitor.ts';
import { QmpClient } from '../vmi/qmp.ts';
import { bootGuest } from './guest/boot.ts';
import { buildGuest } from './guest/build.ts';

export const RELEASE = '6.1.0-56-amd64';
const PT_LOAD = 1;
const PT_NOTE = 4;
const CR_OFFSET = 392; // QEMUCPUState: cr[0..4] start here (vmi/backends/elf-core.ts)

/** Path of a cached dump of a booted cgroup2 test guest; boots the guest and dumps it when missing. */
export async function guestDump(log: (l: string) => void = (l) => process.stderr.write(`${l}\n`)): Promise<string> {
  await buildMonitor({ release: RELEASE, log: (l) => log(`[build] ${l}`) });
  const image = buildGuest((m) => log(`[guest image] ${m}`));
  const dir = join(process.env.CIEL_HOSTILE_DIR ?? join(tmpdir(), 'ciel-hostile'));
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `guest-${RELEASE}-${image.key}-cgroup2.elf`);
  if (existsSync(path)) return path;
  // one cached dump at a time (512 MiB each): drop dumps of older guest images
  for (const f of readdirSync(dir)) if (/^guest-.*\.elf(\.part)?$/.test(f)) rmSync(join(dir, f), { force: true });
  const guest = await bootGuest({ mode: 'cgroup2', name: `elfdump-${process.pid}` });
  const qmp = await QmpClient.connect(guest.qmpSocket);
  try {
    await guest.truth(); // containers running and settled enough to have numbers
    const tmp = `${path}.part`;
    const t = performance.now();
    await qmp.execute('stop');
    await qmp.execute('dump-guest-memory', { paging: false, protocol: `file:${tmp}`, format: 'elf' }, 120_000);
    log(`[elf dump] ${path} in ${(performance.now() - t).toFixed(0)} ms`);
    renameSync(tmp, path);
  } finally {
    qmp.close();
    await guest.stop();
  }
  return path;
}

/** Where the interesting bytes of a pristine dump are. */
export interface DumpLayout {
  size: number;
  phoff: number;
  phnum: number;
  /** file offset of each program header */
  phdrs: { off: number; type: number; offset: bigint; paddr: bigint; filesz: bigint }[];
  /** note headers: file offset, name, desc offset, desc size */
  notes: { off: number; name: string; descOff: number; descsz: number }[];
  /** file offsets of the CR3 field of every QEMU CPU-state note */
  cr3Offsets: number[];
  /** end of the header area (last byte of any phdr / note) */
  headerEnd: number;
  /** PT_LOAD ranges */
  loads: { gpa: bigint; fileOffset: bigint; length: bigint }[];
  /** file offsets of kernel-half page-table pages (reachable from CR3) */
  tablePages: number[];
  /** file offsets of pages holding the cgroup structures the monitor walks (a sample of them) */
  hotPages: number[];
  /** file offsets of pointer fields the walk follows (list heads, kn, kn->name, cset links) */
  hotWords: number[];
  /** file offsets of the page-table entries (every level) that translate the hot pages */
  hotEntries: number[];
}

function readAt(fd: number, off: number, len: number): Buffer {
  const b = Buffer.alloc(len);
  readSync(fd, b, 0, len, off);
  return b;
}

export async function dumpLayout(path: string): Promise<DumpLayout> {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const eh = readAt(fd, 0, 64);
    const phoff = Number(eh.readBigUInt64LE(32));
    const phnum = eh.readUInt16LE(56);
    const phdrs: DumpLayout['phdrs'] = [];
    const notes: DumpLayout['notes'] = [];
    const cr3Offsets: number[] = [];
    let headerEnd = phoff + phnum * 56;
    for (let i = 0; i < phnum; i++) {
      const p = readAt(fd, phoff + i * 56, 56);
      const ph = { off: phoff + i * 56, type: p.readUInt32LE(0), offset: p.readBigUInt64LE(8), paddr: p.readBigUInt64LE(24), filesz: p.readBigUInt64LE(32) };
      phdrs.push(ph);
      if (ph.type === PT_NOTE) {
        const buf = readAt(fd, Number(ph.offset), Number(ph.filesz));
        headerEnd = Math.max(headerEnd, Number(ph.offset + ph.filesz));
        for (let o = 0; o + 12 <= buf.length; ) {
          const namesz = buf.readUInt32LE(o);
          const descsz = buf.readUInt32LE(o + 4);
          const descOff = o + 12 + ((namesz + 3) & ~3);
          const name = buf.toString('latin1', o + 12, o + 12 + Math.max(0, namesz - 1));
          notes.push({ off: Number(ph.offset) + o, name, descOff: Number(ph.offset) + descOff, descsz });
          if (name === 'QEMU' && descsz >= CR_OFFSET + 40) cr3Offsets.push(Number(ph.offset) + descOff + CR_OFFSET + 24);
          o = descOff + ((descsz + 3) & ~3);
        }
      }
    }
    const info = readElfCoreInfo(path);
    const toFile = (gpa: bigint): number | null => {
      const l = info.loads.find((x) => gpa >= x.gpa && gpa < x.gpa + x.length);
      return l ? Number(l.fileOffset + (gpa - l.gpa)) : null;
    };
    // kernel-half page-table pages, from the first vCPU's CR3 (4-level)
    const tablePages: number[] = [];
    const cr3 = info.cpus.find((c) => c.cr3 !== 0n)!.cr3 & 0x000f_ffff_ffff_f000n & ~0x1000n;
    const walk = (table: bigint, level: number, from: number, to: number) => {
      const f = toFile(table);
      if (f === null || tablePages.length > 4000) return;
      tablePages.push(f);
      if (level === 1) return;
      const page = readAt(fd, f, 4096);
      for (let i = from; i < to; i++) {
        const e = page.readBigUInt64LE(i * 8);
        if (e & 1n && !(level <= 3 && e & 0x80n)) walk(e & 0x000f_ffff_ffff_f000n, level - 1, 0, 512);
      }
    };
    walk(cr3, 4, 256, 512);
    // pages the monitor reads: the cgroup tree (root, /docker, the containers, their kernfs nodes and
    // names), the tasks the net lookup starts from, and the kernel globals in the slots
    const btf = await loadBtf(await fetchKernel(RELEASE));
    const o = {
      cgrp: BigInt(btf.memberOffset('cgroup_root', 'cgrp')),
      children: BigInt(btf.memberOffset('cgroup', 'self.children')),
      sibling: BigInt(btf.memberOffset('cgroup', 'self.sibling')),
      kn: BigInt(btf.memberOffset('cgroup', 'kn')),
      knName: BigInt(btf.memberOffset('kernfs_node', 'name')),
      cset: BigInt(btf.memberOffset('cgroup', 'cset_links')),
    };
    const hotPages = new Set<number>();
    const hotWords = new Set<number>();
    const hotEntries = new Set<number>();
    const entriesOf = (va: bigint) => {
      let table = cr3;
      for (let level = 4; level >= 1; level--) {
        const pa = table + ((va >> BigInt(12 + 9 * (level - 1))) & 511n) * 8n;
        const f = toFile(pa);
        if (f === null) return;
        hotEntries.add(f);
        const e = readAt(fd, f, 8).readBigUInt64LE(0);
        if (!(e & 1n) || (level <= 3 && e & 0x80n)) return;
        table = e & 0x000f_ffff_ffff_f000n;
      }
    };
    const backend = new ElfCoreBackend(path);
    const monitor = await GuestMonitor.open({ release: RELEASE, backend });
    try {
      const rd = (va: bigint) => monitor.rt.readVirt(va, 8).readBigUInt64LE(0);
      const addPage = (va: bigint) => {
        try {
          const f = toFile(monitor.rt.translate(va & ~0xfffn));
          if (f !== null) hotPages.add(f);
          entriesOf(va);
        } catch {
          /* unmapped: skip */
        }
      };
      for (const s of monitor.slots) if (!s.perCpu) addPage(BigInt(s.address) + monitor.slide);
      const dfl = BigInt(monitor.slots.find((x) => x.name === 'cgrp_dfl_root')!.address) + monitor.slide;
      const addWord = (va: bigint) => {
        try {
          const f = toFile(monitor.rt.translate(va));
          if (f !== null) hotWords.add(f);
        } catch {
          /* unmapped: skip */
        }
      };
      const visit = (cg: bigint, depth: number) => {
        for (const f of [o.children, o.children + 8n, o.sibling, o.sibling + 8n, o.kn, o.cset]) addWord(cg + f);
        addPage(cg);
        addPage(cg + 0x700n); // struct cgroup spans 1792 bytes
        const kn = rd(cg + o.kn);
        addPage(kn);
        addWord(kn + o.knName);
        addPage(rd(kn + o.knName));
        addPage(rd(cg + o.cset)); // first cgrp_cset_link
        if (depth > 3) return;
        const head = cg + o.children;
        for (let p = rd(head), k = 0; p !== head && k < 64; p = rd(p), k++) visit(p - o.sibling, depth + 1);
      };
      visit(dfl + o.cgrp, 0);
      for (const r of monitor.readCgroups('ciel_mon_cgroup_v2').records) if (r.first_task) addPage(r.first_task);
    } finally {
      monitor.close();
      await backend.close();
    }
    return { size, phoff, phnum, phdrs, notes, cr3Offsets, headerEnd, loads: info.loads, tablePages, hotPages: [...hotPages], hotWords: [...hotWords], hotEntries: [...hotEntries] };
  } finally {
    closeSync(fd);
  }
}

/** Deterministic PRNG (xorshift32) so any case can be replayed from its number. */
function rng(seed: number) {
  let x = seed >>> 0 || 1;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
  return {
    f: next,
    int: (n: number) => Math.floor(next() * n),
    pick: <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)],
    bytes: (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(next() * 256))),
    u64: () => (BigInt(Math.floor(next() * 2 ** 32)) << 32n) | BigInt(Math.floor(next() * 2 ** 32)),
  };
}

const u64le = (v: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt.asUintN(64, v));
  return b;
};
const u32le = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
};

export const KINDS = [
  'elf-header-bytes',
  'phdr-bytes',
  'phdr-huge-filesz',
  'phdr-huge-offset',
  'phdr-overlap',
  'phdr-past-eof',
  'phnum',
  'note-bytes',
  'note-sizes',
  'cr3-garbage',
  'truncate',
  'mem-random-page',
  'mem-pagetable',
  'mem-hot-page',
] as const;
export type Kind = (typeof KINDS)[number];

export interface FuzzCase {
  n: number;
  kind: Kind;
  /** in-place patches (file offset, new bytes; add: a u64 delta added to the original value) */
  edits: { off: number; bytes: Buffer; add?: boolean }[];
  /** truncation: the case file is the first `truncateTo` bytes of the dump */
  truncateTo?: number;
}

/** Case `n` (deterministic): what to change in the dump. */
export function makeCase(n: number, L: DumpLayout, seed = 1): FuzzCase {
  const r = rng((n + 1) * 2654435761 + seed);
  const kind = KINDS[n % KINDS.length];
  const edits: FuzzCase['edits'] = [];
  const phdr = r.pick(L.phdrs);
  const hugeVals = [0xffff_ffff_ffff_ffffn, 0x8000_0000_0000_0000n, 0x7fff_ffff_ffff_ffffn, BigInt(L.size), BigInt(L.size) + 1n, BigInt(L.size) - 1n, 1n << 40n, 0n, r.u64()];
  switch (kind) {
    case 'elf-header-bytes': {
      const k = 1 + r.int(4);
      for (let i = 0; i < k; i++) {
        const len = 1 + r.int(8);
        edits.push({ off: r.int(64 - len + 1), bytes: r.bytes(len) });
      }
      break;
    }
    case 'phdr-bytes': {
      const len = 1 + r.int(16);
      edits.push({ off: phdr.off + r.int(56 - len + 1), bytes: r.bytes(len) });
      break;
    }
    case 'phdr-huge-filesz':
      edits.push({ off: phdr.off + 32, bytes: u64le(r.pick(hugeVals)) });
      if (r.f() < 0.5) edits.push({ off: phdr.off + 40, bytes: u64le(r.pick(hugeVals)) }); // p_memsz too
      break;
    case 'phdr-huge-offset':
      edits.push({ off: phdr.off + 8, bytes: u64le(r.pick(hugeVals)) });
      break;
    case 'phdr-overlap': {
      const loads = L.phdrs.filter((p) => p.type === PT_LOAD);
      const a = r.pick(loads);
      const b = r.pick(loads);
      // a's physical range starts inside b's (or at the same address)
      const delta = b.filesz > 0n ? BigInt(r.int(Number(b.filesz > 0x1000_0000n ? 0x1000_0000n : b.filesz))) & ~0xfffn : 0n;
      edits.push({ off: a.off + 24, bytes: u64le(b.paddr + delta) });
      if (r.f() < 0.5) edits.push({ off: a.off + 16, bytes: u64le(b.paddr + delta) }); // p_vaddr too
      break;
    }
    case 'phdr-past-eof': {
      const loads = L.phdrs.filter((p) => p.type === PT_LOAD);
      const last = loads.reduce((m, p) => (p.offset + p.filesz > m.offset + m.filesz ? p : m));
      edits.push({ off: last.off + 32, bytes: u64le(last.filesz + BigInt(1 + r.int(1 << 20))) });
      break;
    }
    case 'phnum': {
      const v = r.pick([0, 1, L.phnum - 1, L.phnum + 1, 0xffff, 0xfffe, r.int(65536)]);
      const b = Buffer.alloc(2);
      b.writeUInt16LE(v);
      edits.push({ off: 56, bytes: b });
      if (r.f() < 0.3) edits.push({ off: 32, bytes: u64le(r.pick(hugeVals)) }); // e_phoff
      if (v === 0xffff && r.f() < 0.5) edits.push({ off: 40, bytes: u64le(r.pick(hugeVals)) }); // e_shoff (PN_XNUM)
      break;
    }
    case 'note-bytes': {
      const note = r.pick(L.notes);
      const span = 12 + ((note.descOff - note.off - 12) + note.descsz);
      const len = 1 + r.int(32);
      edits.push({ off: note.off + r.int(Math.max(1, span - len)), bytes: r.bytes(len) });
      break;
    }
    case 'note-sizes': {
      const note = r.pick(L.notes);
      const vals = [0, 1, 3, 0xffffffff, 0x7fffffff, 4096, 4097, note.descsz + 4, Math.max(0, note.descsz - 4), r.int(2 ** 32)];
      edits.push({ off: note.off + (r.f() < 0.5 ? 0 : 4), bytes: u32le(r.pick(vals)) });
      break;
    }
    case 'cr3-garbage': {
      const off = r.pick(L.cr3Offsets);
      const ram = L.loads.reduce((m, l) => (l.gpa + l.length > m ? l.gpa + l.length : m), 0n);
      const vals = [0n, 1n, ram, ram + 0x1000n, 1n << 51n, 0xffff_ffff_ffff_f000n, BigInt(r.int(Number(ram))) & ~0xfffn, r.u64(), BigInt(r.int(Number(ram)))];
      edits.push({ off, bytes: u64le(r.pick(vals)) });
      // sometimes every vCPU's CR3, so no good note is left
      if (r.f() < 0.5) for (const o of L.cr3Offsets) if (o !== off) edits.push({ off: o, bytes: u64le(r.pick(vals)) });
      break;
    }
    case 'truncate': {
      // header-sized or a few MiB of RAM: every PT_LOAD that remains must still be inside the file
      const to = r.f() < 0.6 ? r.int(L.headerEnd + 64) : L.headerEnd + r.int(8 << 20);
      return { n, kind, edits, truncateTo: to };
    }
    case 'mem-random-page': {
      const l = r.pick(L.loads);
      const page = Number(l.fileOffset) + r.int(Number(l.length / 4096n)) * 4096;
      edits.push({ off: page, bytes: r.bytes(4096) });
      break;
    }
    case 'mem-pagetable': {
      // mostly an entry on the translation path of a page the monitor reads, else any kernel-half table entry
      const pteVals = [0n, 0x80n | 1n, 0xe3n, (1n << 51n) | 0x63n, 0x40_0000_0063n, 0x40_0000_00e3n, BigInt(L.size) | 0x63n, r.u64()];
      const k = 1 + r.int(4);
      for (let i = 0; i < k; i++) {
        const off = r.f() < 0.8 && L.hotEntries.length ? r.pick(L.hotEntries) : r.pick(L.tablePages) + r.int(512) * 8;
        edits.push({ off, bytes: r.f() < 0.4 ? r.bytes(8) : u64le(r.pick(pteVals)) });
      }
      if (r.f() < 0.05) edits.push({ off: r.pick(L.tablePages), bytes: r.bytes(4096) });
      break;
    }
    case 'mem-hot-page': {
      // pointer fields the walk follows (list heads, kn, names, cset links) or any word of a hot page
      const ptrs = [0n, 0x00007fff12345000n, 0x8000123456789000n, 0xffffeb0000000000n, 0xffff_ffff_ffff_fff8n, r.u64()];
      const k = 1 + r.int(6);
      for (let i = 0; i < k; i++) {
        const off = r.f() < 0.7 && L.hotWords.length ? r.pick(L.hotWords) : r.pick(L.hotPages) + r.int(512) * 8;
        let v: Buffer;
        const c = r.f();
        if (c < 0.3) v = r.bytes(8);
        else if (c < 0.6) v = u64le(r.pick(ptrs));
        else {
          // a near miss: the original pointer plus a small delta (cycles, misaligned structs)
          v = Buffer.alloc(8); // filled in by the runner from the original bytes
          v.writeBigInt64LE(BigInt(r.int(4096) - 2048) * (c < 0.8 ? 8n : 1n));
          edits.push({ off, bytes: v, add: true });
          continue;
        }
        edits.push({ off, bytes: v });
      }
      break;
    }
  }
  return { n, kind, edits };
}

export type OutcomeName = 'sample' | 'sample-truncated' | 'BadInputError' | `GuestFaultError:${number}` | 'CielError';

export interface FuzzResult {
  cases: number;
  outcomes: Record<string, number>;
  byKind: Record<string, Record<string, number>>;
  maxMs: number;
  maxCase: number;
  totalMs: number;
  /** the first error message seen for each error outcome */
  examples: Record<string, string>;
  /** anything that is not a sample or one of the clear errors: must stay empty */
  unexpected: { n: number; kind: Kind; error: string }[];
}

/** Open ElfCoreBackend + GuestMonitor on `path` and sample once; classify the outcome. */
async function openAndSample(path: string, examples: Record<string, string>): Promise<OutcomeName> {
  let backend: ElfCoreBackend | null = null;
  let monitor: GuestMonitor | null = null;
  try {
    backend = new ElfCoreBackend(path);
    monitor = await GuestMonitor.open({ release: RELEASE, backend });
    const s = monitor.sample();
    return s.truncated ? 'sample-truncated' : 'sample';
  } catch (e) {
    const name: OutcomeName | null =
      e instanceof BadInputError ? 'BadInputError' : e instanceof GuestFaultError ? `GuestFaultError:${e.code}` : e instanceof CielError ? 'CielError' : null;
    if (!name) throw e;
    examples[name] ??= (e as Error).message;
    return name;
  } finally {
    monitor?.close();
    await backend?.close();
  }
}

export interface FuzzOptions {
  dump: string;
  layout?: DumpLayout;
  cases: number;
  /** first case number (replay) */
  start?: number;
  seed?: number;
  /** a case slower than this is reported as unexpected (a hang in the making) */
  maxCaseMs?: number;
  onProgress?: (done: number, r: FuzzResult) => void;
}

/** Run `cases` fuzz cases against the dump, restoring it after each; the dump is pristine afterwards. */
export async function fuzzElf(o: FuzzOptions): Promise<FuzzResult> {
  const L = o.layout ?? (await dumpLayout(o.dump));
  const maxCaseMs = o.maxCaseMs ?? 10_000;
  const res: FuzzResult = { cases: 0, outcomes: {}, byKind: {}, maxMs: 0, maxCase: -1, totalMs: 0, examples: {}, unexpected: [] };
  const fd = openSync(o.dump, 'r+');
  const truncPath = `${o.dump}.trunc-${process.pid}`;
  const t0 = performance.now();
  try {
    for (let i = 0; i < o.cases; i++) {
      const n = (o.start ?? 0) + i;
      const c = makeCase(n, L, o.seed);
      const saved = c.edits.map((e) => readAt(fd, e.off, e.bytes.length));
      let path = o.dump;
      if (c.truncateTo !== undefined) {
        const out = openSync(truncPath, 'w');
        const b = Buffer.alloc(Math.min(c.truncateTo, 1 << 20));
        for (let pos = 0; pos < c.truncateTo; ) {
          const len = Math.min(b.length, c.truncateTo - pos);
          readSync(fd, b, 0, len, pos);
          writeSync(out, b, 0, len, pos);
          pos += len;
        }
        closeSync(out);
        path = truncPath;
      }
      let outcome: string;
      const t = performance.now();
      try {
        c.edits.forEach((e, k) => {
          const bytes = e.add ? u64le(saved[k].readBigUInt64LE(0) + e.bytes.readBigInt64LE(0)) : e.bytes;
          writeSync(fd, bytes, 0, bytes.length, e.off);
        });
        outcome = await openAndSample(path, res.examples);
      } catch (e) {
        outcome = 'unexpected';
        res.unexpected.push({ n, kind: c.kind, error: `${(e as Error)?.constructor?.name}: ${(e as Error)?.message}` });
      } finally {
        c.edits.forEach((e, k) => writeSync(fd, saved[k], 0, saved[k].length, e.off));
        if (path === truncPath) rmSync(truncPath, { force: true });
      }
      const ms = performance.now() - t;
      if (ms > maxCaseMs) res.unexpected.push({ n, kind: c.kind, error: `took ${ms.toFixed(0)} ms` });
      if (ms > res.maxMs) {
        res.maxMs = ms;
        res.maxCase = n;
      }
      res.cases++;
      res.outcomes[outcome] = (res.outcomes[outcome] ?? 0) + 1;
      const k = (res.byKind[c.kind] ??= {});
      k[outcome] = (k[outcome] ?? 0) + 1;
      o.onProgress?.(res.cases, res);
    }
  } finally {
    closeSync(fd);
    rmSync(truncPath, { force: true });
  }
  res.totalMs = performance.now() - t0;
  return res;
}
