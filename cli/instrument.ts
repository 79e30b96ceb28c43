// `ciel instrument IN.(ll|bc) -o OUT.(ll|bc) [--report report.json]`
import type { Command } from 'commander';
import { writeFileSync } from 'node:fs';
import { RefusedError } from '../common/errors.ts';

export function registerInstrument(program: Command): void {
  program
    .command('instrument')
    .description(
      'Rewrite LLVM IR for out-of-VM execution: g_map before every guest load and memcpy/memmove source, ' +
        'kernel symbols through a relocation slot table, and refuse what cannot be made safe.',
    )
    .argument('<input>', 'LLVM 14 IR, textual (.ll) or bitcode (.bc), e.g. from clang-14 -O2 -emit-llvm')
    .requiredOption('-o, --output <file>', 'instrumented IR; .bc writes bitcode, anything else text')
    .option('--report <file>', 'write the JSON report (counts, slot table, refusals) here')
    .option('--keep-going', 'write the output even when constructs were refused (exit code stays 2)')
    .action(async (input: string, opts: { output: string; report?: string; keepGoing?: boolean }) => {
      // Loaded on use: LLVM's FFI stays out of every other command.
      const [{ instrumentModule }, { IRModule }] = await Promise.all([import('../passes/instrument.ts'), import('../passes/llvm/ir.ts')]);
      const m = IRModule.load(input);
      try {
        const report = instrumentModule(m, { strict: false });
        if (opts.report) writeFileSync(opts.report, JSON.stringify(report, null, 2) + '\n');
        const { total, translated, skippedLocal } = report.loads;
        process.stderr.write(
          `${input}: ${report.functions} functions, ${total} loads: ${translated} translated, ${skippedLocal} proven local; ` +
            `${report.memcpySources} memcpy sources, ${report.byvalArgs} byval args, ${report.slots.length} kernel symbols; ` +
            `coverage ${(report.coverage * 100).toFixed(1)}%\n`,
        );
        if (report.refusals.length > 0) {
          process.stderr.write(new RefusedError(report.refusals).message + '\n');
          if (!opts.keepGoing) process.exit(2);
          m.write(opts.output);
          process.exit(2);
        }
        m.write(opts.output);
      } finally {
        m.dispose();
      }
    });
}
