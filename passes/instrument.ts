// The instrumentation entry point: one module in, instrumented module + report out.
// Order matters: relocate kernel symbols first (so their uses become guest pointers the provenance
// analysis sees), then verify (refusals), then insert g_map.
import { RefusedError } from '../common/errors.ts';
import { insertGMap } from './gmap-insert.ts';
import { isDefinedFunction, type IRModule } from './llvm/ir.ts';
import { Provenance } from './provenance.ts';
import { relocateExternalGlobals } from './relocate-globals.ts';
import type { InstrumentReport, Refusal } from './report.ts';
import { verifyGuestSafety } from './verify-guest-safety.ts';

export interface InstrumentOptions {
  /** throw RefusedError when anything was refused (default true) */
  strict?: boolean;
}

export function instrumentModule(m: IRModule, opts: InstrumentOptions = {}): InstrumentReport {
  const refusals: Refusal[] = [];
  const { slots, slotLoads } = relocateExternalGlobals(m, refusals);
  const prov = new Provenance(m);
  verifyGuestSafety(m, new Provenance(m, true), refusals);
  const counts = insertGMap(m, prov, slotLoads);
  const broken = m.verify();
  if (broken) throw new Error(`internal error: instrumented module does not verify (${m.source}):\n${broken}`);
  const needed = counts.loadsTotal - counts.skippedLocal;
  const report: InstrumentReport = {
    input: m.source,
    functions: [...m.functions()].filter(isDefinedFunction).length,
    loads: { total: counts.loadsTotal, translated: counts.translated, skippedLocal: counts.skippedLocal },
    memcpySources: counts.memcpySources,
    byvalArgs: counts.byvalArgs,
    slotLoads: slotLoads.size,
    trapsReplaced: counts.trapsReplaced,
    coverage: needed === 0 ? 1 : counts.translated / needed,
    slots,
    refusals,
  };
  if ((opts.strict ?? true) && refusals.length > 0) throw new RefusedError(refusals);
  return report;
}
