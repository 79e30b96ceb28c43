/* Ciel runtime state shared by the inlined g_map fast path (gmap_fast.c, linked as IR into every
 * monitor) and the out-of-line miss path (rt.c). Plain C, no kernel or libc types, so it compiles in
 * both the kernel-header context and the host context. */
#ifndef CIEL_RT_H
#define CIEL_RT_H

typedef unsigned long ciel_u64;
typedef long ciel_s64;
typedef unsigned int ciel_u32;

#define CIEL_PAGE_SHIFT 12
#define CIEL_PAGE_SIZE 4096UL
#define CIEL_TLB_ENTRIES 512 /* power of two; 512 x 16 B = 8 KiB, fits L1 */

/* fault codes reported to the caller of ciel_enter */
enum ciel_fault_code {
  CIEL_OK = 0,
  CIEL_FAULT_NOT_PRESENT = 1,   /* a page-table entry on the walk is not present */
  CIEL_FAULT_OUTSIDE_RAM = 2,   /* a page table or the page itself is outside guest RAM */
  CIEL_FAULT_NON_CANONICAL = 3, /* not a canonical address for the paging mode */
  CIEL_FAULT_USER_HALF = 4,     /* low-half address that is not monitor-local memory (NULL, user space) */
  CIEL_FAULT_BUDGET = 5,        /* per-call load budget exhausted (cyclic list?) */
  CIEL_FAULT_TOO_LARGE = 6,     /* a single page-crossing access larger than the bounce buffer */
  CIEL_FAULT_RESERVED = 7,      /* reserved bit set in a page-table entry */
  CIEL_FAULT_TRAP = 8,          /* the monitor executed a trap (llvm.trap) */
  CIEL_FAULT_NO_VM = 9,         /* no VM attached */
};

struct ciel_tlb_entry {
  ciel_u64 vpage; /* guest virtual address >> 12; 0 = empty (never a high-half page) */
  ciel_u64 host;  /* host address of the first byte of that 4 KiB page */
};

struct ciel_state {
  struct ciel_tlb_entry tlb[CIEL_TLB_ENTRIES];
};

/* Defined (hidden) in rt.c, which is linked into the same shared object as the monitor. */
extern struct ciel_state ciel_state __attribute__((visibility("hidden")));
/* Accesses left in the current call. Instrumented functions keep a local copy (see gmap_fast.c) and
 * write it back here at return, around calls, and (through g_map_slow's argument) on every miss. */
extern ciel_s64 ciel_budget __attribute__((visibility("hidden")));
void *g_map_slow(void *p, ciel_u64 size, ciel_s64 budget) __attribute__((visibility("hidden")));

#endif
