/* The g_map fast path. Compiled to LLVM IR and linked into every instrumented module before the final
 * optimization, so that a TLB hit is a few inlined instructions (DESIGN.md: an out-of-line call costs
 * ~1.6-2 ns per load, an inlined hit ~0.9-1.2). Everything else goes to g_map_slow in rt.c. */
#include "ciel_rt.h"

__attribute__((always_inline)) void *g_map(void *p, ciel_u64 size) {
  ciel_u64 a = (ciel_u64)p;
  /* Low half: monitor-local memory or a bad guest pointer; the slow path tells them apart. */
  if (__builtin_expect((ciel_s64)a >= 0, 0)) return g_map_slow(p, size);
  if (__builtin_expect(--ciel_state.budget < 0, 0)) return g_map_slow(p, size);
  ciel_u64 vpage = a >> CIEL_PAGE_SHIFT;
  struct ciel_tlb_entry *e = &ciel_state.tlb[vpage & (CIEL_TLB_ENTRIES - 1)];
  ciel_u64 off = a & (CIEL_PAGE_SIZE - 1);
  if (__builtin_expect(e->vpage == vpage && off + size <= CIEL_PAGE_SIZE, 1)) return (void *)(e->host + off);
  return g_map_slow(p, size);
}
