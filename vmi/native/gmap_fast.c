/* The g_map fast path. Compiled to LLVM IR and linked into every instrumented module before the final
 * optimization, so that a TLB hit is a few inlined instructions (DESIGN.md: an out-of-line call costs
 * ~1.6-2 ns per load, an inlined hit ~0.9-1.2). Everything else goes to g_map_slow in rt.c.
 *
 * `budget` points at a per-function local the pass creates (synced with ciel_budget at entry, return
 * and around calls): after inlining it lives in a register, so counting every access costs no memory
 * round trip, and a cyclic guest list still ends the call when it reaches zero. */
#include "ciel_rt.h"

__attribute__((always_inline)) void *g_map(void *p, ciel_u64 size, ciel_s64 *budget) {
  ciel_u64 a = (ciel_u64)p;
  /* Low half: monitor-local memory or a bad guest pointer; the slow path tells them apart. */
  if (__builtin_expect((ciel_s64)a >= 0, 0)) return g_map_slow(p, size, *budget);
  if (__builtin_expect(--*budget < 0, 0)) return g_map_slow(p, size, *budget);
  /* entry = tlb[(a >> 12) & (N-1)], computed as one shift and one mask (entries are 16 bytes) */
  struct ciel_tlb_entry *e =
      (struct ciel_tlb_entry *)((char *)ciel_state.tlb + ((a >> (CIEL_PAGE_SHIFT - 4)) & ((CIEL_TLB_ENTRIES - 1) << 4)));
  ciel_u64 off = a & (CIEL_PAGE_SIZE - 1);
  if (__builtin_expect(e->vpage == a >> CIEL_PAGE_SHIFT && off + size <= CIEL_PAGE_SIZE, 1)) return (void *)(e->host + off);
  return g_map_slow(p, size, *budget);
}
