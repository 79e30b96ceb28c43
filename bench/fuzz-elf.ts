// `tsx bench/fuzz-elf.ts [cases] [start]`: fuzz corrupted ELF dumps of a real test guest (default 10,000 cases)
// and print the count per outcome and per mutation kind. The dump (QMP dump-guest-memory, paging false,
// format elf, 512 MiB) is taken once and cached in $CIEL_HOSTILE_DIR or <tmpdir>/ciel-hostile. Each case
// patches the dump in place (or writes a small truncated copy), opens ElfCoreBackend + GuestMonitor,
// samples, and restores the bytes. Any outcome other than a sample or a clear error (BadInputError,
// GuestFaultError, CielError) is "unexpected" and fails the run; a crash would end the process.
import { fileURLToPath } from 'node:url';
import { dumpLayout, fuzzElf, guestDump, type FuzzResult } from '../testbed/elf-dump.ts';

export interface FuzzElfOptions {
  cases?: number;
  start?: number;
  seed?: number;
  log?: (line: string) => void;
}

export async function benchFuzzElf(o: FuzzElfOptions = {}): Promise<FuzzResult> {
  const cases = o.cases ?? 10_000;
  const log = o.log ?? ((l: string) => console.log(l));
  const dump = await guestDump((l) => {
    if (!l.startsWith('[build]')) log(l);
  });
  const layout = await dumpLayout(dump);
  log(`fuzz-elf: ${cases} cases on ${dump} (${(layout.size / 2 ** 20).toFixed(0)} MiB, ${layout.phnum} program headers, ${layout.notes.length} notes, ` +
    `${layout.tablePages.length} page-table pages, ${layout.hotPages.length} hot pages, ${layout.hotWords.length} hot pointers)`);
  let lastReport = performance.now();
  const r = await fuzzElf({
    dump,
    layout,
    cases,
    start: o.start,
    seed: o.seed,
    onProgress: (done, res) => {
      if (performance.now() - lastReport > 10_000) {
        lastReport = performance.now();
        log(`  ${done}/${cases} ${JSON.stringify(res.outcomes)}`);
      }
    },
  });
  const pct = (n: number) => `${((100 * n) / r.cases).toFixed(1)}%`;
  log(`fuzz-elf: ${r.cases} cases in ${(r.totalMs / 1000).toFixed(1)} s (${(r.totalMs / r.cases).toFixed(1)} ms/case, slowest ${r.maxMs.toFixed(0)} ms at case ${r.maxCase})`);
  log('outcome                 count');
  for (const [k, v] of Object.entries(r.outcomes).sort((a, b) => b[1] - a[1])) log(`  ${k.padEnd(22)} ${String(v).padStart(6)}  ${pct(v)}`);
  log('per mutation kind:');
  for (const [k, v] of Object.entries(r.byKind)) log(`  ${k.padEnd(18)} ${Object.entries(v).map(([o, n]) => `${o}=${n}`).join(' ')}`);
  log('first message per error outcome:');
  for (const [k, v] of Object.entries(r.examples)) log(`  ${k.padEnd(22)} ${v.length > 160 ? `${v.slice(0, 160)}...` : v}`);
  log(`unexpected (crash-free but not a sample or a clear error): ${r.unexpected.length}`);
  for (const u of r.unexpected.slice(0, 20)) log(`  case ${u.n} (${u.kind}): ${u.error}`);
  if (r.unexpected.length) process.exitCode = 1;
  return r;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  await benchFuzzElf({ cases: process.argv[2] ? Number(process.argv[2]) : undefined, start: process.argv[3] ? Number(process.argv[3]) : undefined });
}
