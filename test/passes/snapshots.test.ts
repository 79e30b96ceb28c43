// IR snapshot tests: each input under snapshots/ is instrumented and compared with the committed
// <name>.expected.ll (regenerate with UPDATE_SNAPSHOTS=1 and review the diff). Each refusal input
// must be refused with a message naming the function, the instruction and the reason.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { instrumentModule } from '../../passes/instrument.ts';
import { IRModule } from '../../passes/llvm/ir.ts';
import type { InstrumentReport } from '../../passes/report.ts';
import { RefusedError } from '../../common/errors.ts';

const here = fileURLToPath(new URL('.', import.meta.url));
const snapDir = join(here, 'snapshots');
const refuseDir = join(here, 'refusals');

function instrument(path: string): { text: string; report: InstrumentReport } {
  const m = IRModule.load(path);
  try {
    const report = instrumentModule(m);
    // the ModuleID line carries the absolute path: drop it
    const text = m.toString().replace(/^; ModuleID = .*\n/, '').replace(/^source_filename = .*\n/m, '');
    return { text, report };
  } finally {
    m.dispose();
  }
}

/** What each snapshot input must report (a broken pass gets these wrong even if a snapshot were regenerated). */
const EXPECTED: Record<string, Partial<{ total: number; translated: number; local: number; memcpy: number; byval: number; slots: string[]; traps: number }>> = {
  'loads.ll': { total: 8, translated: 6, local: 2, slots: [] },
  'local.ll': { total: 3, translated: 0, local: 3 },
  'memcpy.ll': { total: 1, translated: 0, local: 1, memcpy: 2 },
  'globals.ll': { total: 3, translated: 3, local: 0, slots: ['cgrp_dfl_root', 'init_css_set', 'runqueues', '__per_cpu_offset', 'mem_cgroup_css_alloc'] },
  'byval-trap.ll': { total: 2, translated: 0, local: 2, byval: 1, traps: 1 },
  'null-guarded-store.ll': { total: 3, translated: 2, local: 1 },
};

describe('instrumentation snapshots', () => {
  for (const file of readdirSync(snapDir).filter((f) => f.endsWith('.ll') && !f.endsWith('.expected.ll'))) {
    it(file, () => {
      const { text, report } = instrument(join(snapDir, file));
      const expectedPath = join(snapDir, file.replace(/\.ll$/, '.expected.ll'));
      if (process.env.UPDATE_SNAPSHOTS || !existsSync(expectedPath)) writeFileSync(expectedPath, text);
      expect(text).toBe(readFileSync(expectedPath, 'utf8'));
      expect(report.coverage).toBe(1);
      expect(report.refusals).toEqual([]);
      const e = EXPECTED[file];
      expect(e, `no expectations written for ${file}`).toBeDefined();
      if (e.total !== undefined) expect(report.loads.total).toBe(e.total);
      if (e.translated !== undefined) expect(report.loads.translated).toBe(e.translated);
      if (e.local !== undefined) expect(report.loads.skippedLocal).toBe(e.local);
      if (e.memcpy !== undefined) expect(report.memcpySources).toBe(e.memcpy);
      if (e.byval !== undefined) expect(report.byvalArgs).toBe(e.byval);
      if (e.traps !== undefined) expect(report.trapsReplaced).toBe(e.traps);
      if (e.slots) expect(report.slots.map((s) => s.name)).toEqual(e.slots);
      // every g_map call sits right before the access that uses it, and no guest load is left bare
      expect(text.match(/call i8\* @g_map/g)?.length ?? 0).toBe(report.loads.translated + report.memcpySources + report.byvalArgs);
    });
  }
});

const REFUSALS: Record<string, RegExp> = {
  'store-guest.ll': /in ciel_mon_bad: store through a pointer that may point into guest memory\n\s+store i64 1/,
  'atomicrmw-guest.ll': /atomicrmw on a pointer that may point into guest memory/,
  'cmpxchg-guest.ll': /cmpxchg on a pointer that may point into guest memory/,
  'memset-guest.ll': /memset destination may point into guest memory/,
  'asm-memory.ll': /inline asm with a memory operand[\s\S]*btq/,
  'asm-gs.ll': /uses gs\/fs, privileged or control-transfer instructions/,
  'asm-ud2.ll': /inline asm 'ud2'/,
  'addrspace.ll': /non-zero address space 256/,
  'call-undefined.ll': /call to undefined function 'css_next_descendant_pre'[\s\S]*call to undefined function 'strlen'/,
  'indirect-call.ll': /indirect call \(a guest function pointer can never be called\)/,
  'tls.ll': /thread-local kernel variable cannot be relocated/,
  'global-init.ll': /global initializer refers to a kernel symbol[\s\S]*@my_ptr/,
  'masked-load.ll': /intrinsic 'llvm.masked.load.v4i64.p0v4i64' may read or write memory/,
  'asm-goto.ll': /asm goto \(static keys \/ alternatives\)/,
};

describe('refusals', () => {
  const files = readdirSync(refuseDir).filter((f) => f.endsWith('.ll'));
  it('every refusal input has an expected message', () => {
    expect(files.sort()).toEqual(Object.keys(REFUSALS).sort());
  });
  for (const file of files) {
    it(file, () => {
      let err: unknown;
      try {
        instrument(join(refuseDir, file));
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(RefusedError);
      expect((err as Error).message).toMatch(REFUSALS[file]);
    });
  }
});
