// Corrupted ELF dumps of a real guest: a slice of the fuzz cases of bench/fuzz-elf.ts (which runs >= 10,000).
// Every case must end in a sample or a clear error (BadInputError, GuestFaultError, CielError), never a crash,
// another exception or a hang; the dump is restored after each case and reads exactly as before at the end.
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { beforeAll, expect, it } from 'vitest';
import { ElfCoreBackend } from '../../../vmi/backends/elf-core.ts';
import { GuestMonitor } from '../../../vmi/guest-monitor.ts';
import type { Sample } from '../../../vmi/sample.ts';
import { dumpLayout, fuzzElf, guestDump, KINDS, RELEASE, type DumpLayout } from '../../../testbed/elf-dump.ts';

const CASES = Number(process.env.CIEL_FUZZ_CASES ?? 308); // 22 of each of the 14 kinds
const START = Number(process.env.CIEL_FUZZ_START ?? 0);

let dump: string;
let layout: DumpLayout;

function hashFile(path: string): string {
  const fd = openSync(path, 'r');
  const h = createHash('sha1');
  const b = Buffer.alloc(8 << 20);
  try {
    for (let pos = 0; ; pos += b.length) {
      const n = readSync(fd, b, 0, b.length, pos);
      if (n <= 0) break;
      h.update(b.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}

async function sampleDump(): Promise<Sample> {
  const backend = new ElfCoreBackend(dump);
  const monitor = await GuestMonitor.open({ release: RELEASE, backend });
  try {
    // the dump is mapped read-only and shared: r--s, never writable
    const lines = readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.endsWith(dump));
    expect(lines.length).toBeGreaterThan(0);
    for (const l of lines) expect(l.split(/\s+/)[1], l).toBe('r--s');
    return monitor.sample();
  } finally {
    monitor.close();
    await backend.close();
  }
}

beforeAll(async () => {
  dump = await guestDump();
  layout = await dumpLayout(dump);
}, 900_000);

it(`${CASES} corrupted dumps: a sample or a clear error each, never a crash or a hang; the dump reads the same afterwards`, async () => {
  const before = await sampleDump();
  expect(before.containers.length).toBeGreaterThan(1);
  expect(before.truncated).toBeUndefined();
  const hash = hashFile(dump);
  const r = await fuzzElf({ dump, layout, cases: CASES, start: START, maxCaseMs: 10_000 });
  process.stderr.write(`[elf-fuzz] ${CASES} cases from ${START} in ${(r.totalMs / 1000).toFixed(1)} s (max ${r.maxMs.toFixed(0)} ms, case ${r.maxCase}): ${JSON.stringify(r.outcomes)}\n`);
  for (const [k, v] of Object.entries(r.byKind)) process.stderr.write(`[elf-fuzz]   ${k.padEnd(18)} ${JSON.stringify(v)}\n`);
  expect(r.unexpected).toEqual([]);
  expect(r.cases).toBe(CASES);
  expect(Object.values(r.outcomes).reduce((a, b) => a + b, 0)).toBe(CASES);
  for (const o of Object.keys(r.outcomes)) expect(o).toMatch(/^(sample|sample-truncated|BadInputError|CielError|GuestFaultError:[1-9])$/);
  expect(Object.keys(r.byKind).sort()).toEqual([...KINDS].sort());
  // the fuzzer must reach every layer: header checks, translation faults, and intact samples
  expect(r.outcomes.BadInputError).toBeGreaterThan(0);
  expect(Object.keys(r.outcomes).some((o) => o.startsWith('GuestFaultError'))).toBe(true);
  expect(r.outcomes.sample).toBeGreaterThan(0);
  expect(r.byKind['phdr-past-eof']).toEqual({ BadInputError: r.byKind['phdr-past-eof'].BadInputError });
  expect(r.byKind.truncate).toEqual({ BadInputError: r.byKind.truncate.BadInputError });
  // restored: byte for byte, and the same numbers
  expect(hashFile(dump)).toBe(hash);
  const after = await sampleDump();
  expect(after.containers).toEqual(before.containers);
}, 600_000);
