// `ciel build --kernel RELEASE` | `ciel build --kernel-dir DIR --system-map FILE`
import type { Command } from 'commander';

export function registerBuild(program: Command): void {
  program
    .command('build')
    .description(
      'Compile the monitor (kernel-src/) against one guest kernel: fetch its Debian packages (cached), compile with ' +
        'its own headers, instrument, link, check struct layouts against its BTF, resolve kernel symbols from System.map. ' +
        'Output: generated/<release>/ (monitor.so, slots.json, abi.js + abi.ts, manifest.json).',
    )
    .option('-k, --kernel <release>', 'Debian kernel release, e.g. 5.10.0-46-amd64, 6.1.0-56-amd64, 6.12.118+deb13-cloud-amd64, 7.3.4+deb13-rt-amd64')
    .option('--kernel-dir <dir>', 'an unpacked kernel build tree (non-Debian kernels) instead of --kernel')
    .option('--system-map <file>', 'System.map for --kernel-dir')
    .option('-o, --out <dir>', 'parent folder of the output (default: generated/)')
    .action(async (opts: { kernel?: string; kernelDir?: string; systemMap?: string; out?: string }) => {
      // Loaded here, not at the top: the compiler (ts-morph, LLVM, BTF) stays out of every other command.
      const { buildMonitor } = await import('../compiler/build.ts');
      const r = await buildMonitor({
        release: opts.kernel,
        kernelDir: opts.kernelDir,
        systemMap: opts.systemMap,
        outRoot: opts.out,
        log: (l) => process.stderr.write(`${l}\n`),
      });
      const c = r.manifest.coverage;
      process.stdout.write(
        `${r.outDir}: ${r.manifest.entryPoints.join(', ')}; ${c.loads} loads (${c.translated} translated, ${c.skippedLocal} local), ` +
          `coverage ${(c.ratio * 100).toFixed(1)}%; ${r.manifest.layoutChecks} layouts checked against BTF; ${r.slots.length} kernel symbols; ` +
          `${r.manifest.timings.total_ms} ms\n`,
      );
    });
}
