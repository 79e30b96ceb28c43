// What `ciel instrument` reports (JSON side file): counts, the slot table, and refusals.

export interface Refusal {
  /** function the construct is in ('<global>' for global initializers) */
  fn: string;
  /** the offending instruction or global, as LLVM prints it */
  inst: string;
  reason: string;
}

export interface SlotEntry {
  index: number;
  /** kernel symbol name, as System.map spells it */
  name: string;
  /** 'variable' for data symbols, 'function' for code addresses used as values */
  kind: 'variable' | 'function';
}

export interface InstrumentReport {
  input: string;
  functions: number;
  loads: {
    /** loads in the input module (plain, volatile and atomic) */
    total: number;
    /** loads that now go through g_map */
    translated: number;
    /** loads proven monitor-local (alloca / own globals / entry arguments) */
    skippedLocal: number;
  };
  /** llvm.memcpy / llvm.memmove whose source now goes through g_map */
  memcpySources: number;
  /** byval arguments whose source now goes through g_map */
  byvalArgs: number;
  /** slot loads inserted to relocate kernel symbols (not counted in loads.total) */
  slotLoads: number;
  /** llvm.trap and friends turned into a contained runtime error */
  trapsReplaced: number;
  /** translated / (total - skippedLocal); must be 1 */
  coverage: number;
  slots: SlotEntry[];
  refusals: Refusal[];
}
