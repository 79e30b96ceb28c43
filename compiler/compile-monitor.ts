// C sources -> instrumented, optimized shared object: the whole LLView pipeline for one monitor.
//   clang-14 (-O2, no vectorizer) -> link the modules -> instrument (passes/) -> link g_map fast path
//   -> default<O2> -> object -> .so (+ rt.o)
import { mkdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { IRModule } from '../passes/llvm/ir.ts';
import { instrumentModule } from '../passes/instrument.ts';
import type { InstrumentReport } from '../passes/report.ts';
import { linkMonitor } from './link-monitor.ts';
import { clang } from './tools.ts';

/** Flags for monitor code that is not kernel code (tests, benchmarks). Kernel builds use compiler/kernel/flags.ts. */
export const PLAIN_FLAGS = ['-O2', '-fPIC', '-fno-vectorize', '-fno-slp-vectorize', '-fno-builtin', '-fno-stack-protector', '-g0'];

export interface CompileOptions {
  sources: string[];
  /** clang flags (without -c/-o/-emit-llvm) */
  flags: string[];
  outDir: string;
  /** base name of the outputs: <name>.so, <name>.instrumented.ll, <name>.report.json */
  name: string;
  /** skip instrumentation: a native build of the same code (benchmarks' baseline) */
  native?: boolean;
  log?: (line: string) => void;
}

export interface CompileResult {
  so: string;
  report: InstrumentReport | null;
  instrumentedIR: string | null;
  undefinedSymbols: string[];
  timings: Record<string, number>;
}

export async function compileMonitor(o: CompileOptions): Promise<CompileResult> {
  mkdirSync(o.outDir, { recursive: true });
  const log = o.log ?? (() => {});
  const timings: Record<string, number> = {};
  const lap = (k: string, t0: number) => (timings[k] = Math.round(performance.now() - t0));

  let t0 = performance.now();
  const bcs = await Promise.all(
    o.sources.map(async (src) => {
      const bc = join(o.outDir, `${basename(src).replace(/\.c$/, '')}.bc`);
      log(`clang  ${src}`);
      await clang([...o.flags, '-emit-llvm', '-c', src, '-o', bc], src);
      return bc;
    }),
  );
  lap('clang_ms', t0);

  t0 = performance.now();
  const m = IRModule.load(bcs[0]);
  try {
    for (const bc of bcs.slice(1)) m.link(m.loadSibling(bc), bc);
    let report: InstrumentReport | null = null;
    let instrumentedIR: string | null = null;
    if (!o.native) {
      log(`instrument ${o.name}`);
      report = instrumentModule(m);
      instrumentedIR = join(o.outDir, `${o.name}.instrumented.ll`);
      m.write(instrumentedIR);
      writeFileSync(join(o.outDir, `${o.name}.report.json`), JSON.stringify(report, null, 2) + '\n');
    }
    lap('instrument_ms', t0);
    t0 = performance.now();
    const so = join(o.outDir, `${o.name}.so`);
    log(`link   ${so}`);
    const linked = await linkMonitor(m, so, { shortWchar: o.flags.includes('-fshort-wchar') });
    lap('optimize_link_ms', t0);
    return { so, report, instrumentedIR, undefinedSymbols: linked.undefinedSymbols, timings };
  } finally {
    m.dispose();
  }
}
