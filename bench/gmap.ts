// Benchmark: ns per source-level load for the same C reader (test/synthetic/reader.c), compiled
//   native       - uninstrumented, reading host memory with host pointers
//   instrumented - through Ciel's pipeline, reading a synthetic guest through g_map (TLB hit)
//   miss path    - instrumented, with an access pattern that misses the software TLB every time
// on a sequential read and a pointer chase; ratios are against the native figure of the same run.
import koffi from 'koffi';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RawFileBackend } from '../vmi/backends/raw-file.ts';
import { NativeRuntime } from '../vmi/native-runtime.ts';
import { compileReader, compileReaderNative } from '../testbed/synthetic/fixture.ts';
import { PAGE, SyntheticGuest } from '../testbed/synthetic/image.ts';

const SEQ_WORDS = 1 << 17; // 1 MiB: 256 pages, all fit in the 512-entry TLB
const CHASE_NODES = 4096; // 64-byte nodes over 256 KiB (64 pages), random cyclic order
const CHASE_STEPS = 1 << 22;
const L1_NODES = 64; // 64 nodes in one 4 KiB page: the chase stays in L1, so translation cost shows
const MISS_PAGES = 1024; // nodes on 1024 pages visited so that each access evicts the last user of its TLB slot
const REPEATS = 7;

function shuffledCycle(n: number, seed = 42): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  let x = seed;
  for (let i = n - 1; i > 0; i--) {
    x = (x * 1103515245 + 12345) >>> 0;
    const j = x % (i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

function best(fn: () => void): number {
  let min = Infinity;
  for (let r = 0; r < REPEATS; r++) {
    const t0 = process.hrtime.bigint();
    fn();
    min = Math.min(min, Number(process.hrtime.bigint() - t0));
  }
  return min;
}

function benchIn(base: bigint, n: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64LE(base, 0);
  b.writeBigUInt64LE(BigInt(n), 8);
  return b;
}

export interface GmapBenchResult {
  rows: { case: string; seqNs: number; chaseNs: number; l1ChaseNs: number; seqRatio: number; chaseRatio: number; l1ChaseRatio: number }[];
  missNs: number;
  missRatioToNativeChase: number;
}

export async function benchGmap(log: (s: string) => void = console.log): Promise<GmapBenchResult> {
  const dir = mkdtempSync(join(tmpdir(), 'ciel-bench-'));
  try {
    const [inst, nat] = await Promise.all([compileReader(join(dir, 'i')), compileReaderNative(join(dir, 'n'))]);

    // ---- native: host memory, host pointers
    const natLib = koffi.load(nat.so);
    const proto = 'long %s(void *out, unsigned long outLen, void *in, unsigned long inLen)';
    const natSeq = natLib.func(proto.replace('%s', 'ciel_mon_seq'));
    const natChase = natLib.func(proto.replace('%s', 'ciel_mon_chase'));
    const seqMem = koffi.alloc('uint64_t', SEQ_WORDS);
    const seqView = new BigUint64Array(koffi.view(seqMem, SEQ_WORDS * 8));
    for (let i = 0; i < SEQ_WORDS; i++) seqView[i] = BigInt(i);
    const chaseMem = koffi.alloc('uint8_t', CHASE_NODES * 64);
    const chaseView = new DataView(koffi.view(chaseMem, CHASE_NODES * 64));
    const chaseBase = koffi.address(chaseMem);
    const order = shuffledCycle(CHASE_NODES);
    for (let k = 0; k < CHASE_NODES; k++) {
      chaseView.setBigUint64(order[k] * 64, chaseBase + BigInt(order[(k + 1) % CHASE_NODES] * 64), true);
    }
    const l1Mem = koffi.alloc('uint8_t', 4096);
    const l1View = new DataView(koffi.view(l1Mem, 4096));
    const l1Base = koffi.address(l1Mem);
    const l1Order = shuffledCycle(L1_NODES, 7);
    for (let k = 0; k < L1_NODES; k++) l1View.setBigUint64(l1Order[k] * 64, l1Base + BigInt(l1Order[(k + 1) % L1_NODES] * 64), true);
    const out = Buffer.alloc(8);
    const nL1 = best(() => natChase(out, 8, benchIn(l1Base + BigInt(l1Order[0] * 64), CHASE_STEPS), 16)) / CHASE_STEPS;
    const nSeq = best(() => natSeq(out, 8, benchIn(koffi.address(seqMem), SEQ_WORDS), 16)) / SEQ_WORDS;
    const nChase = best(() => natChase(out, 8, benchIn(chaseBase + BigInt(order[0] * 64), CHASE_STEPS), 16)) / CHASE_STEPS;

    // ---- instrumented: the same layouts in a synthetic guest
    const g = new SyntheticGuest(24 << 20, false);
    const seqVa = 0xffffc90000000000n;
    const chaseVa = 0xffffc90100000000n;
    const missVa = 0xffffc90200000000n;
    const l1Va = 0xffffc90300000000n;
    g.mapNew(l1Va, PAGE.KiB4);
    for (let k = 0; k < L1_NODES; k++) g.writeU64(l1Va + BigInt(l1Order[k] * 64), l1Va + BigInt(l1Order[(k + 1) % L1_NODES] * 64));
    g.mapNew(seqVa, BigInt(SEQ_WORDS * 8));
    g.mapNew(chaseVa, BigInt(CHASE_NODES * 64));
    const seqBytes = Buffer.alloc(SEQ_WORDS * 8);
    for (let i = 0; i < SEQ_WORDS; i++) seqBytes.writeBigUInt64LE(BigInt(i), i * 8);
    g.write(seqVa, seqBytes);
    for (let k = 0; k < CHASE_NODES; k++) g.writeU64(chaseVa + BigInt(order[k] * 64), chaseVa + BigInt(order[(k + 1) % CHASE_NODES] * 64));
    // miss pattern: visit page p, then p+512 (same TLB slot), then p+1, p+513, ...
    g.mapNew(missVa, BigInt(MISS_PAGES) * PAGE.KiB4);
    const missOrder: number[] = [];
    for (let p = 0; p < MISS_PAGES / 2; p++) missOrder.push(p, p + MISS_PAGES / 2);
    missOrder.forEach((p, k) => {
      const next = missOrder[(k + 1) % missOrder.length];
      g.writeU64(missVa + BigInt(p) * PAGE.KiB4 + 128n, missVa + BigInt(next) * PAGE.KiB4 + 128n);
    });
    const raw = join(dir, 'bench.raw');
    g.saveRaw(raw);
    const backend = new RawFileBackend(raw);
    const rt = new NativeRuntime(inst.so);
    rt.attach(backend, { cr3: g.cr3, cr4: g.cr4 });
    rt.writeU64s('__ciel_slots', inst.report!.slots.map(() => 0n));
    const budget = 1 << 30;
    const call = (name: string, input: Buffer) => rt.call(name, out, input, budget);

    const iSeq = best(() => call('ciel_mon_seq', benchIn(seqVa, SEQ_WORDS))) / SEQ_WORDS;
    const iChase = best(() => call('ciel_mon_chase', benchIn(chaseVa + BigInt(order[0] * 64), CHASE_STEPS))) / CHASE_STEPS;
    const hit = rt.stats().tlbHitRatio;
    const iL1 = best(() => call('ciel_mon_chase', benchIn(l1Va + BigInt(l1Order[0] * 64), CHASE_STEPS))) / CHASE_STEPS;
    const missSteps = 1 << 20;
    const iMiss = best(() => call('ciel_mon_chase', benchIn(missVa + 128n, missSteps))) / missSteps;
    const missStats = rt.stats();
    rt.close();
    await backend.close();

    const r2 = (x: number) => Math.round(x * 100) / 100;
    const result: GmapBenchResult = {
      rows: [
        { case: 'native (uninstrumented)', seqNs: r2(nSeq), chaseNs: r2(nChase), l1ChaseNs: r2(nL1), seqRatio: 1, chaseRatio: 1, l1ChaseRatio: 1 },
        {
          case: 'instrumented, TLB hit',
          seqNs: r2(iSeq),
          chaseNs: r2(iChase),
          l1ChaseNs: r2(iL1),
          seqRatio: r2(iSeq / nSeq),
          chaseRatio: r2(iChase / nChase),
          l1ChaseRatio: r2(iL1 / nL1),
        },
      ],
      missNs: r2(iMiss),
      missRatioToNativeChase: r2(iMiss / nChase),
    };
    log('g_map: ns per load (best of 7), same reader.c compiled natively and through Ciel');
    log('| case | sequential ns | chase 256 KiB ns | chase L1 ns | seq x native | chase x native | L1 chase x native |');
    log('|---|---|---|---|---|---|---|');
    for (const r of result.rows) log(`| ${r.case} | ${r.seqNs} | ${r.chaseNs} | ${r.l1ChaseNs} | ${r.seqRatio} | ${r.chaseRatio} | ${r.l1ChaseRatio} |`);
    log(`| instrumented, TLB miss every load (page walk) | - | ${result.missNs} | - | - | ${result.missRatioToNativeChase} | - |`);
    log(`TLB hit ratio on the chase: ${(hit * 100).toFixed(3)}%; miss run: ${missStats.misses} misses / ${missStats.accesses} accesses, ${missStats.walks} walks`);
    const worst = Math.max(result.rows[1].chaseRatio, result.rows[1].l1ChaseRatio);
    log(`target: pointer chase <= 3x native -> ${worst <= 3 ? 'met' : 'NOT met'} (256 KiB ${result.rows[1].chaseRatio}x, L1 ${result.rows[1].l1ChaseRatio}x)`);
    return result;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
