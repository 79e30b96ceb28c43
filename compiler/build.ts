// `ciel build`: the monitor in kernel-src/ compiled against one guest kernel's own headers, instrumented,
// linked, checked against that kernel's BTF, with its kernel-symbol slots resolved from System.map.
// Output: generated/<release>/ = monitor.so, slots.json, abi.ts, manifest.json (+ IR and report).
import { execa } from 'execa';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { checkReleaseName, GENERATED, type BuildManifest, type SlotInfo } from '../common/build-artifact.ts';
import { BadInputError, CielError } from '../common/errors.ts';
import { packagePath } from '../common/package-root.ts';
import { generateBindings } from './bindings.ts';
import { compileMonitor } from './compile-monitor.ts';
import { loadBtf } from './kernel/btf.ts';
import { btfDefines } from './kernel/btf-defines.ts';
import { kernelClangFlags } from './kernel/flags.ts';
import { checkLayouts, extractLayoutConstants } from './kernel/layout-check.ts';
import { fetchKernelForBuild, kernelTreeFromDir, type KernelTree } from './kernel/packages.ts';
import { loadSystemMap } from './kernel/system-map.ts';
import { clangPath } from './tools.ts';

export const KERNEL_SRC = packagePath('kernel-src') + '/';

/** What the monitor .so may import: libc, for the runtime's setjmp/longjmp, memcpy and dl_iterate_phdr. */
const ALLOWED_IMPORTS = new Set([
  '_setjmp', 'longjmp', 'abort', 'calloc', 'free', 'memcpy', 'memset', 'memmove', 'dl_iterate_phdr', 'dladdr',
  '__cxa_finalize', '__gmon_start__', '_ITM_deregisterTMCloneTable', '_ITM_registerTMCloneTable', '__stack_chk_fail',
]);

export interface BuildOptions {
  /** an already-resolved kernel tree (tests, tools); takes precedence over release/kernelDir */
  tree?: KernelTree;
  release?: string;
  kernelDir?: string;
  systemMap?: string;
  /** parent of the per-release output folder (default generated/) */
  outRoot?: string;
  log?: (line: string) => void;
}

export interface BuildResult {
  outDir: string;
  so: string;
  manifest: BuildManifest;
  slots: SlotInfo[];
}

export async function buildMonitor(o: BuildOptions): Promise<BuildResult> {
  const log = o.log ?? (() => {});
  const t0 = performance.now();
  clangPath(); // fail early and clearly when clang-14 is missing
  let tree: KernelTree;
  if (o.tree) {
    tree = o.tree;
  } else if (o.kernelDir) {
    if (!o.systemMap) throw new CielError('--kernel-dir needs --system-map');
    tree = kernelTreeFromDir(o.kernelDir, o.systemMap);
  } else if (o.release) {
    tree = await fetchKernelForBuild(o.release, { log });
  } else {
    throw new CielError('give --kernel RELEASE (e.g. 6.1.0-56-amd64) or --kernel-dir DIR --system-map FILE');
  }
  const fetchMs = Math.round(performance.now() - t0);
  const outDir = join(o.outRoot ?? GENERATED, checkReleaseName(tree.release));

  const sources = readdirSync(KERNEL_SRC)
    .filter((f) => f.endsWith('.c'))
    .sort()
    .map((f) => join(KERNEL_SRC, f));
  if (sources.length === 0) throw new BadInputError(KERNEL_SRC, 'no monitor sources (*.c)');
  // the kernel's BTF: facts the headers lack (btf-defines.ts) now, every layout check after compiling
  const btf = await loadBtf(tree);
  const defines = btfDefines(btf);
  const flags = [...kernelClangFlags(tree, [join(KERNEL_SRC, 'shim'), KERNEL_SRC], { emit: 'none' }), ...defines];
  log(`compiling ${sources.length} monitor sources against ${tree.release} headers`);
  const compiled = await compileMonitor({ sources, flags, outDir, name: 'monitor', log });
  const report = compiled.report!;
  if (report.coverage !== 1) throw new CielError(`coverage ${report.coverage} < 100%: some guest loads are not translated`);

  // Layouts: every offset the monitor relies on must equal the kernel's own BTF.
  const t1 = performance.now();
  const constants = extractLayoutConstants(readFileSync(compiled.instrumentedIR!, 'utf8'));
  if (constants.length === 0) throw new BadInputError(join(KERNEL_SRC, 'layout.c'), 'declares no CIEL_LAYOUT entries');
  const checks = checkLayouts(constants, btf);
  log(`layout: ${checks.length} struct sizes / field offsets match the kernel's BTF`);

  // Slots: each kernel symbol the monitor uses, with its System.map address.
  const map = loadSystemMap(tree.systemMap);
  const missing: string[] = [];
  const slots: SlotInfo[] = report.slots.map((s) => {
    const sym = map.get(s.name);
    if (!sym) missing.push(s.name);
    return { index: s.index, name: s.name, kind: s.kind, address: `0x${(sym?.address ?? 0n).toString(16)}`, perCpu: sym?.perCpu ?? false };
  });
  if (missing.length) throw new BadInputError(tree.systemMap, `symbols the monitor uses are not in this kernel: ${missing.join(', ')}`);
  writeFileSync(join(outDir, 'slots.json'), JSON.stringify(slots, null, 2) + '\n');

  await generateBindings(join(KERNEL_SRC, 'ciel_abi.h'), join(outDir, 'abi.ts'));
  const bad = compiled.undefinedSymbols.filter((s) => !ALLOWED_IMPORTS.has(s));
  if (bad.length) throw new CielError(`${compiled.so} imports symbols the runtime does not provide: ${bad.join(', ')}`);

  const entryPoints = (await execa('/usr/lib/llvm-14/bin/llvm-nm', ['-D', '--defined-only', '--format=just-symbols', compiled.so])).stdout
    .split('\n')
    .filter((s) => s.startsWith('ciel_mon_'));
  const compiler = (await execa(clangPath(), ['--version'])).stdout.split('\n')[0];
  const manifest: BuildManifest = {
    release: tree.release,
    flavour: tree.flavour,
    builtAt: new Date().toISOString(),
    compiler,
    packages: tree.packageVersions,
    sources: sources.map((s) => s.replace(KERNEL_SRC, 'kernel-src/')),
    entryPoints,
    coverage: {
      loads: report.loads.total,
      translated: report.loads.translated,
      skippedLocal: report.loads.skippedLocal,
      memcpySources: report.memcpySources,
      ratio: report.coverage,
    },
    layoutChecks: checks.length,
    slots: slots.length,
    kernelText: `0x${(map.get('_text')?.address ?? 0xffffffff81000000n).toString(16)}`,
    perCpuStart: `0x${map.perCpuStart.toString(16)}`,
    timings: { fetch_ms: fetchMs, ...compiled.timings, check_ms: Math.round(performance.now() - t1), total_ms: Math.round(performance.now() - t0) },
  };
  writeFileSync(join(outDir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
  log(`built ${compiled.so} in ${manifest.timings.total_ms} ms`);
  return { outDir, so: compiled.so, manifest, slots };
}

export { GENERATED };
