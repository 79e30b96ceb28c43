/* A kernel-like reader for the synthetic guest: linked lists, struct copies, page-crossing reads,
 * kernel globals reached through the slot table. Compiled through the whole Ciel pipeline by the tests. */
typedef unsigned long u64;
typedef unsigned int u32;

struct list_head { struct list_head *next, *prev; };
struct stats { u64 v[8]; };
struct task {
  u64 pid;
  u64 utime;
  char comm[16];
  struct list_head tasks;
  u32 flags;
};
struct group {
  u64 id;
  struct stats st; /* copied whole: an llvm.memcpy from guest memory */
  char name[24];
};
struct __attribute__((packed)) unaligned { char pad; u64 value; };

extern struct list_head task_list;    /* a kernel list head (global) */
extern struct group *root_group;      /* a kernel pointer variable (global) */
extern struct unaligned crossing;     /* placed so that .value crosses a page boundary */
#ifdef CIEL_NATIVE_BASELINE /* the benchmark's uninstrumented build: no guest, so define them here */
struct list_head task_list;
struct group *root_group;
struct unaligned crossing;
#endif

#define container_of(p, type, member) ((type *)((char *)(p) - __builtin_offsetof(type, member)))

struct walk_out {
  u64 count, sum_pid, sum_utime, xor_flags;
  char first_comm[16];
  u64 crossing_value;
  struct stats copied;
  u64 group_id;
};

long ciel_mon_walk(void *out, unsigned long out_len, const void *in, unsigned long in_len) {
  struct walk_out *r = out;
  if (out_len < sizeof *r) return -1;
  u64 count = 0, sum_pid = 0, sum_utime = 0, xf = 0;
  for (struct list_head *p = task_list.next; p != &task_list && count < 100000; p = p->next) {
    struct task *t = container_of(p, struct task, tasks);
    if (count == 0)
      for (int i = 0; i < 16; i++) r->first_comm[i] = t->comm[i];
    count++;
    sum_pid += t->pid;
    sum_utime += t->utime;
    xf ^= t->flags;
  }
  r->count = count;
  r->sum_pid = sum_pid;
  r->sum_utime = sum_utime;
  r->xor_flags = xf;
  r->crossing_value = crossing.value;
  struct group *g = root_group;
  r->copied = g->st;
  r->group_id = g->id;
  return (long)count;
}

/* No bound of its own: a cyclic list must be stopped by the runtime's load budget. */
long ciel_mon_walk_unbounded(void *out, unsigned long out_len, const void *in, unsigned long in_len) {
  u64 n = 0;
  for (struct list_head *p = task_list.next; p != &task_list; p = p->next) n++;
  *(u64 *)out = n;
  return 0;
}

/* Benchmarks: sequential read of n u64 words at base, and a pointer chase of n steps from base. */
struct bench_in { u64 base; u64 n; };

long ciel_mon_seq(void *out, unsigned long out_len, const void *in, unsigned long in_len) {
  const struct bench_in *a = in;
  const u64 *p = (const u64 *)a->base;
  u64 s = 0;
  for (u64 i = 0; i < a->n; i++) s += p[i];
  *(u64 *)out = s;
  return 0;
}

long ciel_mon_chase(void *out, unsigned long out_len, const void *in, unsigned long in_len) {
  const struct bench_in *a = in;
  struct list_head *p = (struct list_head *)a->base;
  for (u64 i = 0; i < a->n; i++) p = p->next;
  *(u64 *)out = (u64)p;
  return 0;
}
