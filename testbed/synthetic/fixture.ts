// A kernel-like synthetic guest for the reader in reader.c: known tasks on a list, a group whose stats
// cross a page boundary onto a non-adjacent physical page, an unaligned value crossing a page, and
// globals in a kernel-image region. Used by the tests and the benchmark.
import { fileURLToPath } from 'node:url';
import { compileMonitor, PLAIN_FLAGS, type CompileResult } from '../../compiler/compile-monitor.ts';
import { PAGE, SyntheticGuest } from './image.ts';

export const READER_C = fileURLToPath(new URL('./reader.c', import.meta.url));

export interface Layout {
  directMap: bigint;
  vmalloc: bigint;
  kernelImage: bigint;
}

export const LAYOUT_4LEVEL: Layout = {
  directMap: 0xffff888000000000n,
  vmalloc: 0xffffc90000000000n,
  kernelImage: 0xffffffff82000000n,
};

export const LAYOUT_5LEVEL: Layout = {
  directMap: 0xff11000000000000n,
  vmalloc: 0xffa0000000000000n,
  kernelImage: 0xffffffff82000000n,
};

export const TASKS = 200;
export const TASK_SIZE = 56; // pid, utime, comm[16], tasks{next,prev}, flags (+pad)
export const CROSSING_VALUE = 0x0123456789abcdefn;
export const GROUP_ID = 0xc0ffee;
export const statValue = (k: number) => BigInt(0x1111 * (k + 1)) + (BigInt(k) << 40n);
export const taskFlags = (i: number) => (i * 2654435761) >>> 0;

export interface SyntheticWorld {
  guest: SyntheticGuest;
  layout: Layout;
  /** slot values by symbol name */
  symbols: Record<string, bigint>;
  taskAddrs: bigint[];
  /** physical pages holding page tables (corruption targets) */
  expected: {
    count: number;
    sumPid: bigint;
    sumUtime: bigint;
    xorFlags: number;
  };
}

/** Build the world: 4- or 5-level paging, 1 GiB direct map, 2 MiB kernel image, 4 KiB vmalloc pages. */
export function buildWorld(la57: boolean, sizeMiB = 16): SyntheticWorld {
  const layout = la57 ? LAYOUT_5LEVEL : LAYOUT_4LEVEL;
  const g = new SyntheticGuest(sizeMiB << 20, la57);
  // Direct map: one 1 GiB page over physical 0 (RAM is smaller: the rest is "outside RAM").
  g.map(layout.directMap, 0n, PAGE.GiB1);
  // Kernel image: two 2 MiB pages.
  g.mapNew(layout.kernelImage, 2n * PAGE.MiB2, PAGE.MiB2);
  // vmalloc: 4 KiB pages at deliberately non-adjacent physical pages, with a hole after them.
  const vmallocPages = 8;
  for (let i = 0; i < vmallocPages; i++) {
    g.allocPage(); // skip one physical page between mappings
    g.map(layout.vmalloc + BigInt(i) * PAGE.KiB4, g.allocPage(), PAGE.KiB4);
  }

  const taskListVa = layout.kernelImage + 0x100n;
  const rootGroupVa = layout.kernelImage + 0x200n;
  // struct unaligned { char pad; u64 value } with value at bytes 4092..4099 of a vmalloc page pair
  const crossingVa = layout.vmalloc + PAGE.KiB4 - 5n;
  g.write(crossingVa, Buffer.from([0x5a]));
  g.writeU64(crossingVa + 1n, CROSSING_VALUE);

  // Tasks: half in the direct map (physical memory from the allocator), half in vmalloc pages 3..5.
  const taskAddrs: bigint[] = [];
  let vmallocCursor = layout.vmalloc + 3n * PAGE.KiB4 + 8n;
  for (let i = 0; i < TASKS; i++) {
    let va: bigint;
    if (i % 2 === 0) {
      va = layout.directMap + g.allocPhys(BigInt(TASK_SIZE), 16n);
    } else {
      va = vmallocCursor;
      vmallocCursor += BigInt(TASK_SIZE) + 24n; // some tasks straddle vmalloc page boundaries
    }
    taskAddrs.push(va);
  }
  let sumPid = 0n;
  let sumUtime = 0n;
  let xorFlags = 0;
  taskAddrs.forEach((va, i) => {
    const pid = BigInt(i + 1);
    const utime = BigInt(i) * 1000n + 7n;
    g.writeU64(va, pid);
    g.writeU64(va + 8n, utime);
    const comm = Buffer.alloc(16);
    comm.write(`task-${i}`);
    g.write(va + 16n, comm);
    const next = i + 1 < TASKS ? taskAddrs[i + 1] + 32n : taskListVa;
    const prev = i > 0 ? taskAddrs[i - 1] + 32n : taskListVa;
    g.writeU64(va + 32n, next);
    g.writeU64(va + 40n, prev);
    g.writeU32(va + 48n, taskFlags(i));
    sumPid += pid;
    sumUtime += utime;
    xorFlags ^= taskFlags(i);
  });
  g.writeU64(taskListVa, taskAddrs[0] + 32n);
  g.writeU64(taskListVa + 8n, taskAddrs[TASKS - 1] + 32n);

  // struct group { u64 id; struct stats st (64 B); char name[24]; } with st crossing into the next
  // vmalloc page (which is not physically adjacent).
  const groupVa = layout.vmalloc + 2n * PAGE.KiB4 - 40n;
  g.writeU64(groupVa, BigInt(GROUP_ID));
  for (let k = 0; k < 8; k++) g.writeU64(groupVa + 8n + BigInt(k * 8), statValue(k));
  g.writeU64(rootGroupVa, groupVa);

  return {
    guest: g,
    layout,
    symbols: { task_list: taskListVa, root_group: rootGroupVa, crossing: crossingVa },
    taskAddrs,
    expected: { count: TASKS, sumPid, sumUtime, xorFlags: xorFlags >>> 0 },
  };
}

let compiled: Promise<CompileResult> | undefined;
let compiledNative: Promise<CompileResult> | undefined;

/** The reader compiled through the whole pipeline (once per process). */
export function compileReader(outDir: string): Promise<CompileResult> {
  compiled ??= compileMonitor({ sources: [READER_C], flags: PLAIN_FLAGS, outDir, name: 'reader' });
  return compiled;
}

/** The same reader without instrumentation: the native baseline of the benchmark. */
export function compileReaderNative(outDir: string): Promise<CompileResult> {
  compiledNative ??= compileMonitor({ sources: [READER_C], flags: [...PLAIN_FLAGS, '-DCIEL_NATIVE_BASELINE'], outDir, name: 'reader-native', native: true });
  return compiledNative;
}

/** struct walk_out, decoded. */
export function decodeWalkOut(b: Buffer) {
  return {
    count: Number(b.readBigUInt64LE(0)),
    sumPid: b.readBigUInt64LE(8),
    sumUtime: b.readBigUInt64LE(16),
    xorFlags: Number(b.readBigUInt64LE(24)),
    firstComm: b.toString('latin1', 32, 48).replace(/\0.*$/s, ''),
    crossing: b.readBigUInt64LE(48),
    copied: Array.from({ length: 8 }, (_, k) => b.readBigUInt64LE(56 + k * 8)),
    groupId: Number(b.readBigUInt64LE(120)),
  };
}
export const WALK_OUT_SIZE = 128;
