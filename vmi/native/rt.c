/* The g_map miss path and the guest-memory runtime, linked into every monitor shared object (and
 * built alone as libciel_rt.so for tools and tests that walk page tables without a monitor).
 *
 * - x86-64 page walk from CR3: 4-level and 5-level (LA57), 1 GiB and 2 MiB pages, non-present entries
 * - guest-physical -> host through read-only mapped ranges supplied by a memory backend
 * - a software TLB (struct ciel_state, probed inline by gmap_fast.c) filled here on a miss
 * - page-crossing accesses assembled in a bounce ring (adjacent guest pages are not adjacent on the host)
 * - fault containment: any failure longjmps back to ciel_enter, which returns a fault code; the guest
 *   address and the reason are kept for the caller. Nothing here ever writes guest memory.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ciel_rt.h"

#define API __attribute__((visibility("default")))
#define PTE_PRESENT 0x1ULL
#define PTE_PS 0x80ULL
#define PTE_ADDR 0x000ffffffffff000ULL
#define MAX_RANGES 64
#define MAX_WINDOWS 16
#define BOUNCE_SIZE (1u << 20)
#define BOUNCE_MAX (256u << 10) /* largest single page-crossing access */
#define STACK_WINDOW (256u << 10)

struct ciel_state ciel_state __attribute__((visibility("hidden")));
ciel_s64 ciel_budget __attribute__((visibility("hidden")));

struct ciel_range {
  uint64_t gpa, len;
  const unsigned char *host;
};

struct ciel_vm {
  uint64_t cr3; /* physical address of the top-level table */
  int la57;
  int nranges;
  struct ciel_range r[MAX_RANGES];
};

struct ciel_fault {
  uint64_t gva;    /* the guest virtual address that could not be read */
  uint64_t detail; /* entry value, physical address or size, depending on the code */
  uint32_t code;   /* enum ciel_fault_code */
  uint32_t level;  /* page-table level where the walk stopped (5..1), 0 if n/a */
};

struct ciel_stats {
  uint64_t accesses; /* translated (high-half) accesses in the last call */
  uint64_t misses;   /* of which went to the slow path */
  uint64_t walks;    /* page walks done */
  uint64_t bounced;  /* page-crossing accesses assembled */
  uint64_t pages;    /* distinct pages inserted in the TLB */
};

struct window {
  uint64_t lo, hi;
};

static struct ciel_vm *cur_vm;
static jmp_buf *cur_jb;
static struct ciel_fault last_fault;
static struct ciel_stats stats;
static struct window windows[MAX_WINDOWS];
static int nwindows_fixed, nwindows;
static unsigned char bounce[BOUNCE_SIZE] __attribute__((aligned(64)));
static uint32_t bounce_pos;
static int flush_each_call = 1;

/* ---------- physical memory ---------- */

static const unsigned char *phys_to_host(const struct ciel_vm *vm, uint64_t pa, uint64_t need) {
  for (int i = 0; i < vm->nranges; i++) {
    const struct ciel_range *r = &vm->r[i];
    uint64_t off = pa - r->gpa;
    if (pa >= r->gpa && off < r->len && need <= r->len - off) return r->host + off;
  }
  return 0;
}

static uint64_t read_pte(const unsigned char *h) {
  /* one aligned 8-byte load: the guest may be changing the entry, but we see old or new, never torn */
  return *(const volatile uint64_t *)h;
}

/* Walk the guest page tables for va. Returns CIEL_OK and the physical address, or a fault code. */
static int walk(const struct ciel_vm *vm, uint64_t va, uint64_t *pa, struct ciel_fault *f) {
  int levels = vm->la57 ? 5 : 4;
  int bits = vm->la57 ? 57 : 48;
  f->gva = va;
  f->level = 0;
  if ((uint64_t)((int64_t)(va << (64 - bits)) >> (64 - bits)) != va) {
    f->detail = va;
    return f->code = CIEL_FAULT_NON_CANONICAL;
  }
  stats.walks++;
  uint64_t table = vm->cr3 & PTE_ADDR;
  for (int lvl = levels; lvl >= 1; lvl--) {
    int shift = CIEL_PAGE_SHIFT + 9 * (lvl - 1);
    uint64_t slot = table + ((va >> shift) & 511) * 8;
    const unsigned char *h = phys_to_host(vm, slot, 8);
    f->level = (uint32_t)lvl;
    if (!h) {
      f->detail = slot;
      return f->code = CIEL_FAULT_OUTSIDE_RAM;
    }
    uint64_t e = read_pte(h);
    if (!(e & PTE_PRESENT)) {
      f->detail = e;
      return f->code = CIEL_FAULT_NOT_PRESENT;
    }
    if (e & PTE_PS) {
      if (lvl == 3 || lvl == 2) { /* 1 GiB or 2 MiB page */
        uint64_t size = 1ULL << shift;
        *pa = (e & PTE_ADDR & ~(size - 1)) | (va & (size - 1));
        return f->code = CIEL_OK;
      }
      if (lvl > 3) { /* PS is reserved in PML5E/PML4E */
        f->detail = e;
        return f->code = CIEL_FAULT_RESERVED;
      }
      /* at level 1 bit 7 is PAT, not a size */
    }
    table = e & PTE_ADDR;
  }
  *pa = table | (va & (CIEL_PAGE_SIZE - 1));
  return f->code = CIEL_OK;
}

/* Host address of the 4 KiB page holding va (high half only), or a fault code. */
static int page_host(const struct ciel_vm *vm, uint64_t va, const unsigned char **host, struct ciel_fault *f) {
  f->gva = va;
  if ((int64_t)va >= 0) {
    f->code = CIEL_FAULT_USER_HALF;
    f->detail = va;
    f->level = 0;
    return f->code;
  }
  uint64_t pa;
  int code = walk(vm, va & ~(CIEL_PAGE_SIZE - 1), &pa, f);
  if (code) return code;
  const unsigned char *h = phys_to_host(vm, pa, CIEL_PAGE_SIZE);
  if (!h) {
    f->detail = pa;
    f->level = 0;
    return f->code = CIEL_FAULT_OUTSIDE_RAM;
  }
  *host = h;
  return CIEL_OK;
}

/* ---------- fault containment ---------- */

static void __attribute__((noreturn)) fault(const struct ciel_fault *f) {
  last_fault = *f;
  if (cur_jb) longjmp(*cur_jb, 1);
  abort(); /* g_map outside ciel_enter: a runtime bug, not a guest problem */
}

static void __attribute__((noreturn)) fault_code(uint64_t gva, uint32_t code, uint64_t detail) {
  struct ciel_fault f = {gva, detail, code, 0};
  fault(&f);
}

API void ciel_trap(void) { fault_code(0, CIEL_FAULT_TRAP, 0); }

/* ---------- the miss path ---------- */

static int in_window(uint64_t a, uint64_t size) {
  for (int i = 0; i < nwindows; i++)
    if (a >= windows[i].lo && a <= windows[i].hi && size <= windows[i].hi - a) return 1;
  return 0;
}

static const unsigned char *map_page(uint64_t va) {
  uint64_t vpage = va >> CIEL_PAGE_SHIFT;
  struct ciel_tlb_entry *e = &ciel_state.tlb[vpage & (CIEL_TLB_ENTRIES - 1)];
  if (e->vpage == vpage) return (const unsigned char *)e->host;
  const unsigned char *h;
  struct ciel_fault f;
  if (page_host(cur_vm, va, &h, &f)) fault(&f);
  e->vpage = vpage;
  e->host = (uint64_t)h;
  stats.pages++;
  return h;
}

__attribute__((visibility("hidden"))) void *g_map_slow(void *p, ciel_u64 size, ciel_s64 budget) {
  uint64_t a = (uint64_t)p;
  ciel_budget = budget; /* the caller's local count, so stats and faults see the exact value */
  if ((int64_t)a >= 0) {
    /* Monitor-local memory the pass could not prove local (stack, buffers, our own data) passes;
     * any other low-half address is a garbage guest pointer (NULL, user space): refuse it. */
    if (in_window(a, size)) return p;
    fault_code(a, CIEL_FAULT_USER_HALF, size);
  }
  if (budget < 0) fault_code(a, CIEL_FAULT_BUDGET, 0);
  stats.misses++;
  if (size == 0) return bounce;
  uint64_t off = a & (CIEL_PAGE_SIZE - 1);
  if (off + size <= CIEL_PAGE_SIZE) return (void *)(map_page(a) + off);
  if (size > BOUNCE_MAX || a + size < a) fault_code(a, CIEL_FAULT_TOO_LARGE, size);
  /* page-crossing: copy piecewise into the bounce ring; the pointer is consumed right away */
  uint32_t need = (uint32_t)((size + 15) & ~15ULL);
  if (bounce_pos + need > BOUNCE_SIZE) bounce_pos = 0;
  unsigned char *dst = bounce + bounce_pos;
  bounce_pos += need;
  for (uint64_t done = 0; done < size;) {
    uint64_t va = a + done;
    uint64_t o = va & (CIEL_PAGE_SIZE - 1);
    uint64_t n = CIEL_PAGE_SIZE - o;
    if (n > size - done) n = size - done;
    memcpy(dst + done, map_page(va) + o, n);
    done += n;
  }
  stats.bounced++;
  return dst;
}

/* ---------- API for the Node runtime (through koffi) ---------- */

API struct ciel_vm *ciel_vm_new(void) { return calloc(1, sizeof(struct ciel_vm)); }

API void ciel_vm_free(struct ciel_vm *vm) {
  if (cur_vm == vm) cur_vm = 0;
  free(vm);
}

/* Add a read-only host mapping of guest-physical [gpa, gpa+len). Returns 0, or -1 when full/overlapping. */
API int ciel_vm_add_range(struct ciel_vm *vm, uint64_t gpa, uint64_t len, const void *host) {
  if (vm->nranges >= MAX_RANGES || len == 0 || gpa + len < gpa) return -1;
  for (int i = 0; i < vm->nranges; i++)
    if (gpa < vm->r[i].gpa + vm->r[i].len && vm->r[i].gpa < gpa + len) return -1;
  vm->r[vm->nranges++] = (struct ciel_range){gpa, len, host};
  return 0;
}

/* Present entries in the kernel half (256..511) of a top-level table; -1 when it is outside RAM. */
static int kernel_half_present(const struct ciel_vm *vm, uint64_t root) {
  int n = 0;
  for (int i = 256; i < 512; i++) {
    const unsigned char *h = phys_to_host(vm, root + (uint64_t)i * 8, 8);
    if (!h) return -1;
    if (read_pte(h) & PTE_PRESENT) n++;
  }
  return n;
}

/* Call after the RAM ranges were added (the root is chosen by looking at the tables). */
API void ciel_vm_set_paging(struct ciel_vm *vm, uint64_t cr3, uint64_t cr4) {
  uint64_t root = cr3 & PTE_ADDR;
  /* With PTI a user-mode CR3 points at the user copy (kernel root + 0x1000), whose kernel half maps
   * only the entry trampolines. Without PTI (e.g. an AMD-like vCPU) a PGD is one 4 KiB page and any
   * process's CR3 may have bit 12 set: masking it blindly pointed at an unrelated page (seen on a 7.3
   * guest). So the masked root is taken only when it maps more of the kernel half. */
  if (root & 0x1000ULL) {
    uint64_t masked = root & ~0x1000ULL;
    if (kernel_half_present(vm, masked) > kernel_half_present(vm, root)) root = masked;
  }
  vm->cr3 = root;
  vm->la57 = (int)((cr4 >> 12) & 1);
}

API void ciel_flush_tlb(void) { memset(ciel_state.tlb, 0, sizeof ciel_state.tlb); }

/* Make vm the one g_map translates for (flushes the TLB). */
API void ciel_select(struct ciel_vm *vm) {
  cur_vm = vm;
  ciel_flush_tlb();
}

/* Keep TLB entries across calls (faster; only sound while the guest's kernel mappings stay put). */
API void ciel_set_flush_each_call(int on) { flush_each_call = on; }

API int ciel_translate(const struct ciel_vm *vm, uint64_t va, uint64_t *pa, struct ciel_fault *f) {
  return walk(vm, va, pa, f);
}

API int ciel_read_phys(const struct ciel_vm *vm, uint64_t pa, void *buf, uint64_t len) {
  const unsigned char *h = phys_to_host(vm, pa, len);
  if (!h) return CIEL_FAULT_OUTSIDE_RAM;
  memcpy(buf, h, len);
  return CIEL_OK;
}

/* Read guest virtual memory without entering a monitor (tools, KASLR search). */
API int ciel_read_virt(const struct ciel_vm *vm, uint64_t va, void *buf, uint64_t len, struct ciel_fault *f) {
  for (uint64_t done = 0; done < len;) {
    const unsigned char *h;
    uint64_t cur = va + done;
    int code = page_host(vm, cur, &h, f);
    if (code) return code;
    uint64_t o = cur & (CIEL_PAGE_SIZE - 1);
    uint64_t n = CIEL_PAGE_SIZE - o;
    if (n > len - done) n = len - done;
    memcpy((unsigned char *)buf + done, h + o, n);
    done += n;
  }
  return CIEL_OK;
}

typedef long (*ciel_entry_fn)(void *out, unsigned long out_len, const void *in, unsigned long in_len);

/* Call an exported monitor function with fault containment. Returns 0 and stores the function's
 * result, or returns a fault code (details: ciel_last_fault). */
API int ciel_enter(ciel_entry_fn fn, void *out, uint64_t out_len, const void *in, uint64_t in_len, int64_t budget,
                   long *result) {
  if (!cur_vm) {
    last_fault = (struct ciel_fault){0, 0, CIEL_FAULT_NO_VM, 0};
    return CIEL_FAULT_NO_VM;
  }
  if (cur_jb) abort(); /* not re-entrant: one sample at a time per shared object */
  jmp_buf jb;
  uint64_t frame = (uint64_t)__builtin_frame_address(0);
  nwindows = nwindows_fixed;
  if (out_len && nwindows < MAX_WINDOWS) windows[nwindows++] = (struct window){(uint64_t)out, (uint64_t)out + out_len};
  if (in_len && nwindows < MAX_WINDOWS) windows[nwindows++] = (struct window){(uint64_t)in, (uint64_t)in + in_len};
  if (nwindows < MAX_WINDOWS) windows[nwindows++] = (struct window){frame - STACK_WINDOW, frame};
  if (flush_each_call) ciel_flush_tlb();
  memset(&stats, 0, sizeof stats);
  memset(&last_fault, 0, sizeof last_fault);
  ciel_budget = budget;
  if (setjmp(jb)) {
    cur_jb = 0;
    stats.accesses = (uint64_t)(budget - (ciel_budget < 0 ? 0 : ciel_budget));
    return (int)last_fault.code;
  }
  cur_jb = &jb;
  long r = fn(out, out_len, in, in_len);
  cur_jb = 0;
  stats.accesses = (uint64_t)(budget - ciel_budget);
  *result = r;
  return CIEL_OK;
}

API void ciel_last_fault(struct ciel_fault *f) { *f = last_fault; }
API void ciel_last_stats(struct ciel_stats *s) { *s = stats; }

/* Our own shared object's loaded segments are monitor-local too (string constants, tables). */
static int add_own_segments(struct dl_phdr_info *info, size_t size, void *self) {
  (void)size;
  Dl_info di;
  if (!dladdr(self, &di) || (uint64_t)di.dli_fbase != (uint64_t)info->dlpi_addr) return 0;
  for (int i = 0; i < info->dlpi_phnum && nwindows_fixed < MAX_WINDOWS - 4; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD) continue;
    uint64_t lo = info->dlpi_addr + ph->p_vaddr;
    windows[nwindows_fixed++] = (struct window){lo, lo + ph->p_memsz};
  }
  return 1;
}

__attribute__((constructor)) static void ciel_rt_init(void) {
  dl_iterate_phdr(add_own_segments, (void *)&ciel_state);
  nwindows = nwindows_fixed;
}
