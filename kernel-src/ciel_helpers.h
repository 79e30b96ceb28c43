/* SPDX-License-Identifier: MIT */
/*
 * ciel_helpers.h - generic building blocks for monitors that read a guest kernel from
 * outside: bounded list walks, possible-CPU / possible-node iteration, bit tests and
 * string copies, written in plain C so that every guest access is an ordinary load the
 * Ciel pass can translate (no inline asm, no out-of-line kernel function, no store to
 * guest memory).
 *
 * Each helper is named after the kernel function/macro it replaces, prefixed ciel_, with
 * the C types in/out and the kernel version it was checked against (6.1.192, Debian
 * 6.1.0-56). Pointers into the guest are ordinary kernel pointers here; the runtime
 * translates every load, and aborts the call on a bad address.
 */
#ifndef CIEL_HELPERS_H
#define CIEL_HELPERS_H

#include <linux/types.h>
#include <linux/list.h>
#include <linux/cpumask.h>
#include <linux/nodemask.h>
#include <linux/percpu.h>
#include <linux/errno.h>

#include "ciel_abi.h"
#include "ciel_version.h"

/* Sanity bounds: guest memory may be hostile (cycles, huge counts). */
#define CIEL_MAX_CPUS		1024	/* possible CPUs summed over (Debian NR_CPUS is 8192) */
#define CIEL_MAX_NODES		64	/* possible NUMA nodes */
#define CIEL_MAX_DEPTH		64	/* cgroup depth walked (and kernfs parents followed) */
#define CIEL_DEF_DEPTH		32
#define CIEL_DEF_CGROUPS	4096
#define CIEL_MAX_LIST		4096	/* generic inner list bound (csets, devices) */
#define CIEL_MAX_BLKGS		256	/* blkgs (one per block device) of one blkcg */
#define CIEL_MAX_RXQ		256	/* veth rx queues */
#define CIEL_MAX_TASKS_TRIED	64	/* tasks tried to find one with a netns */

/* Per-call context, lives on the monitor's stack (local memory). */
struct ciel_ctx {
	struct ciel_mon_args	args;
	u32			hdr_flags;	/* CIEL_HDR_* accumulated during the call */
	u32			nr_cpus;
	u32			nr_cpu_ids;
	u32			nr_nodes;
	u32			cpus[CIEL_MAX_CPUS];
	u32			nodes[CIEL_MAX_NODES];
};

/*
 * Bounded list_for_each_entry. `budget` is an int lvalue decremented per element;
 * it ends < 0 iff the walk was cut short (list longer than the budget, or a cycle).
 * Mirrors list_for_each_entry (include/linux/list.h, 6.1).
 */
#define ciel_list_for_each_entry(pos, head, member, budget)			\
	for (pos = list_first_entry(head, typeof(*pos), member);		\
	     !list_entry_is_head(pos, head, member) && (budget)-- > 0;		\
	     pos = list_next_entry(pos, member))

/* Bounded hlist_for_each_entry (include/linux/list.h, 6.1), same budget rule. */
#define ciel_hlist_for_each_entry(pos, head, member, budget)			\
	for (pos = hlist_entry_safe(READ_ONCE((head)->first), typeof(*pos), member); \
	     pos && (budget)-- > 0;						\
	     pos = hlist_entry_safe(READ_ONCE((pos)->member.next), typeof(*pos), member))

/*
 * ciel_test_bit - test_bit() with a variable bit number, without the `bt` asm
 * (arch/x86/include/asm/bitops.h variable_test_bit reads memory inside asm).
 * in: unsigned long nr, const unsigned long *addr (guest or local); out: bool.
 */
static __always_inline bool ciel_test_bit(unsigned long nr, const unsigned long *addr)
{
	return (READ_ONCE(addr[BIT_WORD(nr)]) >> (nr % BITS_PER_LONG)) & 1UL;
}

/*
 * ciel_collect_possible_cpus - for_each_possible_cpu(cpu) done once per call:
 * reads nr_cpu_ids and __cpu_possible_mask (both globals, relocated), keeps the CPU
 * numbers in ctx->cpus. Replaces cpumask_next() -> _find_next_bit() (out of line).
 * in: struct ciel_ctx *; out: ctx->cpus[0..nr_cpus), CIEL_HDR_TRUNC_CPUS if capped.
 * Checked: 6.1 include/linux/cpumask.h (cpu_possible_mask = &__cpu_possible_mask).
 */
static __always_inline void ciel_collect_possible_cpus(struct ciel_ctx *ctx)
{
	const unsigned long *bits = cpumask_bits(cpu_possible_mask);
	unsigned int n = READ_ONCE(nr_cpu_ids);
	unsigned int cpu, w;

	ctx->nr_cpu_ids = n;
	if (n > NR_CPUS)
		n = NR_CPUS;
	ctx->nr_cpus = 0;
	for (w = 0; w * BITS_PER_LONG < n; w++) {
		unsigned long word = READ_ONCE(bits[w]);

		for (cpu = w * BITS_PER_LONG; word && cpu < n; cpu++, word >>= 1) {
			if (!(word & 1))
				continue;
			if (ctx->nr_cpus == CIEL_MAX_CPUS) {
				ctx->hdr_flags |= CIEL_HDR_TRUNC_CPUS;
				return;
			}
			ctx->cpus[ctx->nr_cpus++] = cpu;
		}
	}
}

/*
 * ciel_collect_possible_nodes - for_each_node(nid) (node_states[N_POSSIBLE]) once per
 * call. Replaces next_node() -> find_next_bit(). Checked: 6.1 include/linux/nodemask.h.
 */
static __always_inline void ciel_collect_possible_nodes(struct ciel_ctx *ctx)
{
	unsigned int n = nr_node_ids;
	unsigned int nid;

	if (n > MAX_NUMNODES)
		n = MAX_NUMNODES;
	ctx->nr_nodes = 0;
	for (nid = 0; nid < n; nid++) {
		if (!ciel_test_bit(nid, node_states[N_POSSIBLE].bits))
			continue;
		if (ctx->nr_nodes == CIEL_MAX_NODES) {
			ctx->hdr_flags |= CIEL_HDR_TRUNC_NODES;
			return;
		}
		ctx->nodes[ctx->nr_nodes++] = nid;
	}
}

/* ciel_for_each_cpu(i, cpu, ctx): iterate the collected possible CPUs. */
#define ciel_for_each_cpu(i, cpu, ctx)						\
	for ((i) = 0; (i) < (ctx)->nr_cpus && (((cpu) = (ctx)->cpus[i]), 1); (i)++)

#define ciel_for_each_node(i, nid, ctx)						\
	for ((i) = 0; (i) < (ctx)->nr_nodes && (((nid) = (ctx)->nodes[i]), 1); (i)++)

/*
 * ciel_strscpy - strscpy() from a guest string into local memory (no libc strlen/memcpy that
 * would read guest memory untranslated), one aligned 8-byte guest load per 8 characters: cgroup
 * paths are most of a sample's loads when read byte by byte. An aligned word never crosses a
 * page, and a word is loaded only when the string reaches into it (its first byte belongs to the
 * string or is the byte after the last one read), so no page is touched that a byte-wise copy
 * would not touch; the bytes around the string in those words are read and ignored.
 * in: char *dst (local), const char *src (guest), size_t size; out: length copied,
 * *trunc set when src did not fit. dst is always NUL-terminated (size > 0).
 */
static __always_inline size_t ciel_strscpy(char *dst, const char *src, size_t size, bool *trunc)
{
	const u64 *word = (const u64 *)((unsigned long)src & ~7UL);
	unsigned int b = (unsigned long)src & 7;
	size_t i = 0;

	if (!size)
		return 0;
	for (;;) {		/* ends: i grows by one per byte up to size - 1 */
		u64 w = READ_ONCE(*word) >> (8 * b);

		for (; b < 8; b++, w >>= 8) {
			char c = (char)(w & 0xff);

			if (i + 1 >= size) {
				dst[i] = 0;
				if (c)
					*trunc = true;
				return i;
			}
			dst[i] = c;
			if (!c)
				return i;
			i++;
		}
		word++;
		b = 0;
	}
}

/* ciel_strncmp - strncmp() of a guest string against a local one; 0 when equal. */
static __always_inline int ciel_strncmp(const char *guest, const char *local, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		char a = READ_ONCE(guest[i]), b = local[i];

		if (a != b)
			return (unsigned char)a < (unsigned char)b ? -1 : 1;
		if (!a)
			return 0;
	}
	return 0;
}

/* Copy the caller's optional struct ciel_mon_args (in/in_len) and apply defaults. */
static __always_inline int ciel_parse_args(struct ciel_ctx *ctx, const void *in, unsigned long in_len)
{
	char *a = (char *)&ctx->args;
	unsigned long i;

	for (i = 0; i < sizeof(ctx->args); i++)
		a[i] = 0;
	if (in_len && !in)
		return -EINVAL;
	for (i = 0; i < in_len && i < sizeof(ctx->args); i++)
		a[i] = ((const char *)in)[i];
	if (!ctx->args.max_cgroups)
		ctx->args.max_cgroups = CIEL_DEF_CGROUPS;
	if (!ctx->args.max_depth)
		ctx->args.max_depth = CIEL_DEF_DEPTH;
	if (ctx->args.max_depth > CIEL_MAX_DEPTH)
		ctx->args.max_depth = CIEL_MAX_DEPTH;
	ctx->args.ifname[CIEL_IFNAME_MAX - 1] = 0;
	if (!ctx->args.ifname[0]) {
		ctx->args.ifname[0] = 'e';
		ctx->args.ifname[1] = 't';
		ctx->args.ifname[2] = 'h';
		ctx->args.ifname[3] = '0';
		ctx->args.ifname[4] = 0;
	}
	ctx->hdr_flags = 0;
	return 0;
}

#endif /* CIEL_HELPERS_H */
