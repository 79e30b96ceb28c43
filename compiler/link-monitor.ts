// Instrumented IR -> shared object: link the g_map fast path in as IR, optimize (default<O2>, so the
// fast path is inlined at every load), emit an object with LLVM's X86 backend, link with rt.o.
import { execa } from 'execa';
import { C, initX86, Linkage, type NRef, type Ref } from '../passes/llvm/ffi.ts';
import type { IRModule } from '../passes/llvm/ir.ts';
import { ToolError } from '../common/errors.ts';
import { runtimeObjects } from './runtime-objects.ts';
import { clangPath } from './tools.ts';

const TRIPLE = 'x86_64-pc-linux-gnu';

export interface LinkResult {
  so: string;
  /** undefined dynamic symbols of the result (libc only is expected) */
  undefinedSymbols: string[];
}

/** Optimize `m` (consumed: it is modified in place) with g_map inlined, and write `soPath`. */
export async function linkMonitor(
  m: IRModule,
  soPath: string,
  opts: { optLevel?: 'O2' | 'O3'; shortWchar?: boolean } = {},
): Promise<LinkResult> {
  const rt = await runtimeObjects();
  const fastPath = opts.shortWchar ? rt.fastBcShortWchar : rt.fastBc;
  const fast = m.loadSibling(fastPath);
  C.SetTarget(fast, C.GetTarget(m.mod) as string); // same triple: no linker warning
  m.link(fast, fastPath);
  const gmap = C.GetNamedFunction(m.mod, 'g_map') as NRef;
  if (gmap) C.SetLinkage(gmap, Linkage.Internal);
  // The fast path was built with the reduced feature set; drop per-function CPU pins so it inlines.
  C.SetTarget(m.mod, TRIPLE);

  initX86();
  const tm = targetMachine();
  try {
    const po = C.CreatePassBuilderOptions() as Ref;
    C.PassBuilderOptionsSetLoopVectorization(po, 0);
    C.PassBuilderOptionsSetSLPVectorization(po, 0);
    const err = C.RunPasses(m.mod, `default<${opts.optLevel ?? 'O2'}>`, tm, po) as NRef;
    C.DisposePassBuilderOptions(po);
    if (err) throw new ToolError('LLVM', `optimization failed: ${C.GetErrorMessage(err)}`);
    const broken = m.verify();
    if (broken) throw new ToolError('LLVM', `optimized module does not verify: ${broken}`);
    const obj = `${soPath}.o`;
    const msg: (string | null)[] = [null];
    // kind 1 = LLVMObjectFile
    if (C.TargetMachineEmitToFile(tm, m.mod, obj, 1, msg)) throw new ToolError('LLVM', `code generation failed: ${msg[0]}`);
    const r = await execa(clangPath(), ['-shared', '-o', soPath, obj, rt.rtObj, '-Wl,-Bsymbolic', '-Wl,-z,now', '-Wl,-z,noexecstack'], {
      reject: false,
      all: true,
    });
    if (r.exitCode !== 0) throw new ToolError('ld', `linking ${soPath} failed:\n${r.all}`);
    return { so: soPath, undefinedSymbols: await undefinedSymbols(soPath) };
  } finally {
    C.DisposeTargetMachine(tm);
  }
}

function targetMachine(): Ref {
  const t: NRef[] = [null];
  const msg: (string | null)[] = [null];
  if (C.GetTargetFromTriple(TRIPLE, t, msg)) throw new ToolError('LLVM', `no X86 target: ${msg[0]}`);
  // level 2 = Default (-O2), reloc 2 = PIC, code model 0 = default
  return C.CreateTargetMachine(t[0], TRIPLE, 'x86-64', '', 2, 2, 0) as Ref;
}

export async function undefinedSymbols(so: string): Promise<string[]> {
  const r = await execa('/usr/lib/llvm-14/bin/llvm-nm', ['-D', '--undefined-only', '--format=just-symbols', so]);
  return r.stdout.split('\n').map((s) => s.trim().replace(/@.*$/, '')).filter(Boolean);
}
