/* SPDX-License-Identifier: MIT */
/*
 * ciel_cgroup.h - read-only readers of cgroup state (core, cpu rstat, memcg, blkcg,
 * pids, cpuacct, kernfs names), one helper per kernel function it mirrors.
 * Checked against Linux 6.1 (Debian 6.1.192, 6.1.0-56-{amd64,rt-amd64} headers).
 *
 * Reading from outside means no flush: rstat-based numbers (cpu.stat, memory.stat,
 * io.stat on v2) are computed as "what the guest would print right after a full flush":
 * the flushed global value plus every delta still pending below it. The reasoning for
 * each is next to the helper.
 */
#ifndef CIEL_CGROUP_H
#define CIEL_CGROUP_H

#include <linux/cgroup.h>
#include <linux/kernfs.h>
#include <linux/kernel_stat.h>
#include <linux/memcontrol.h>
#include <linux/page_counter.h>
#include <linux/sched.h>
#include <linux/nsproxy.h>

#include "ciel_helpers.h"
#include "ciel_private.h"

/* ---- cgroup core -------------------------------------------------------------- */

/*
 * ciel_cgroup_css - cgroup_css(cgrp, ss) by subsystem id, without the lockdep/RCU
 * checks. in: struct cgroup *, int ssid; out: struct cgroup_subsys_state * or NULL
 * (on v2, NULL when the controller is not enabled for this cgroup).
 */
static __always_inline struct cgroup_subsys_state *ciel_cgroup_css(struct cgroup *cgrp, int ssid)
{
	return READ_ONCE(cgrp->subsys[ssid]);
}

/* ciel_css_is_online - css->flags & CSS_ONLINE (include/linux/cgroup-defs.h, 6.1).
 * in: struct cgroup_subsys_state *; out: bool. */
static __always_inline bool ciel_css_is_online(struct cgroup_subsys_state *css)
{
	return READ_ONCE(css->flags) & CSS_ONLINE;
}

/*
 * ciel_cgroup_task_count - cgroup_task_count() (kernel/cgroup/cgroup.c, 6.1): the
 * tasks attached directly to this cgroup = sum of css_set->nr_tasks over
 * cgrp->cset_links. Also returns the first live task (task->nsproxy != NULL, at most
 * CIEL_MAX_TASKS_TRIED looked at) on a css_set's tasks list: the net lookup starts
 * there (tasks being migrated sit on mg_tasks and are skipped).
 * in: struct cgroup *; out: int count, *first (struct task_struct * or NULL).
 */
static __always_inline int ciel_cgroup_task_count(struct ciel_ctx *ctx, struct cgroup *cgrp,
				  struct task_struct **first)
{
	struct cgrp_cset_link *link;
	int budget = CIEL_MAX_LIST;
	int count = 0;

	*first = NULL;
	int tries = CIEL_MAX_TASKS_TRIED;

	ciel_list_for_each_entry(link, &cgrp->cset_links, cset_link, budget) {
		struct css_set *cset = READ_ONCE(link->cset);
		struct task_struct *t;

		if (!cset)
			continue;
		count += READ_ONCE(cset->nr_tasks);
		if (*first || tries <= 0)
			continue;
		/* a live task: exiting ones have already dropped task->nsproxy */
		ciel_list_for_each_entry(t, &cset->tasks, cg_list, tries) {
			if (READ_ONCE(t->nsproxy)) {
				*first = t;
				break;
			}
		}
	}
	if (budget < 0)
		ctx->hdr_flags |= CIEL_HDR_TRUNC_LIST;
	return count;
}

/*
 * ciel_kernfs_parent - kn->parent. 6.15 renamed it __parent and made it RCU-protected
 * (commit "kernfs: Use RCU to access kernfs_node::parent."); the pointer
 * itself means the same.
 */
static __always_inline struct kernfs_node *ciel_kernfs_parent(struct kernfs_node *kn)
{
#if CIEL_SINCE(6, 15)
	return (struct kernfs_node *)READ_ONCE(kn->__parent);
#else
	return READ_ONCE(kn->parent);
#endif
}

/*
 * ciel_kernfs_path - kernfs_path_from_node(kn, NULL) (fs/kernfs/dir.c, 6.1) relative
 * to the hierarchy root: "/" for the root, "/a/b" below it. Names come from
 * kernfs_node->name up the ->parent chain (the root node has parent NULL).
 * in: struct kernfs_node *kn, char *buf (local), size_t size; out: *trunc.
 */
static __always_inline void ciel_kernfs_path(struct kernfs_node *kn, char *buf, size_t size, bool *trunc)
{
	struct kernfs_node *chain[CIEL_MAX_DEPTH];
	int depth = 0, i;
	size_t len = 0;

	while (kn && depth < CIEL_MAX_DEPTH) {
		struct kernfs_node *parent = ciel_kernfs_parent(kn);

		if (!parent)
			break;			/* kn is the hierarchy root */
		chain[depth++] = kn;
		kn = parent;
	}
	if (kn && ciel_kernfs_parent(kn))
		*trunc = true;			/* deeper than CIEL_MAX_DEPTH */

	buf[0] = '/';
	buf[1] = 0;
	len = depth ? 0 : 1;
	for (i = depth - 1; i >= 0; i--) {
		if (len + 2 > size) {
			*trunc = true;
			break;
		}
		buf[len++] = '/';
		len += ciel_strscpy(buf + len, READ_ONCE(chain[i]->name), size - len, trunc);
	}
	buf[len < size ? len : size - 1] = 0;
}

/* ---- CPU: cgroup v2 rstat (kernel/cgroup/rstat.c, 6.1) ------------------------ */

/*
 * ciel_cgroup_rstat_cpu_pending - per-CPU deltas of one cgroup not yet flushed:
 *   sum over possible cpus of rstatc->bstat.cputime.sum_exec_runtime
 *                             - rstatc->last_bstat.cputime.sum_exec_runtime
 * 6.1 cgroup_base_stat_flush(cgrp, cpu) adds exactly this (cur - last_bstat) to
 * cgrp->bstat and moves last_bstat up to cur; per-CPU bstat itself is cumulative.
 * in: struct cgroup *; out: u64 ns.
 */
/*
 * 6.16 split struct cgroup_rstat_cpu in two (commit "cgroup: use separate
 * rstat trees for each subsystem"): the update tree moved to css_rstat_cpu (per css) and
 * the base cputime stats to cgroup_rstat_base_cpu (cgrp->rstat_base_cpu), with the same
 * bstat / last_bstat members and the same flush arithmetic. 6.12's cgroup_rstat_cpu
 * also carries subtree_bstat (per-CPU cpu.stat of the subtree), which cpu.stat usage
 * does not use.
 */
#if CIEL_SINCE(6, 16)
#define ciel_rstat_base_cpu	cgroup_rstat_base_cpu
#define CIEL_RSTAT_BASE_CPU(cgrp) READ_ONCE((cgrp)->rstat_base_cpu)
#else
#define ciel_rstat_base_cpu	cgroup_rstat_cpu
#define CIEL_RSTAT_BASE_CPU(cgrp) READ_ONCE((cgrp)->rstat_cpu)
#endif

static __always_inline u64 ciel_cgroup_rstat_cpu_pending(struct ciel_ctx *ctx, struct cgroup *cgrp)
{
	struct ciel_rstat_base_cpu __percpu *rc = CIEL_RSTAT_BASE_CPU(cgrp);
	u64 sum = 0;
	u32 i, cpu;

	if (!rc)
		return 0;
	ciel_for_each_cpu(i, cpu, ctx) {
		struct ciel_rstat_base_cpu *rstatc = per_cpu_ptr(rc, cpu);

		sum += READ_ONCE(rstatc->bstat.cputime.sum_exec_runtime) -
		       READ_ONCE(rstatc->last_bstat.cputime.sum_exec_runtime);
	}
	return sum;
}

/*
 * ciel_cgroup_base_stat_self - the part of cpu.stat usage of `cgrp` that is known
 * without its descendants: cgrp->bstat (flushed) + its own pending per-CPU deltas.
 *
 * ciel_cgroup_base_stat_contrib - what a strict descendant D still owes to every
 * ancestor: its pending per-CPU deltas + (D->bstat - D->last_bstat).
 * in: struct cgroup *, u64 pending (ciel_cgroup_rstat_cpu_pending); out: u64 ns.
 *
 * Why (6.1 rstat.c): cgroup_base_stat_flush(D, cpu) does
 *     D->bstat += percpu(cur - last);             percpu last = cur
 *     if (parent is not the root):
 *         parent->bstat += D->bstat - D->last_bstat;  D->last_bstat = D->bstat
 * and cgroup_rstat_flush_locked() visits children before parents, so a full flush of C
 * leaves C->bstat = C->bstat + pending(C) + sum over strict descendants D of
 * (pending(D) + D->bstat - D->last_bstat). cpu.stat (cgroup_base_stat_cputime_show)
 * prints that bstat.sum_exec_runtime / 1000 for every non-root cgroup. Nothing is
 * written: the guest's next flush moves the same deltas.
 */
static __always_inline u64 ciel_cgroup_base_stat_self(struct cgroup *cgrp, u64 pending)
{
	return READ_ONCE(cgrp->bstat.cputime.sum_exec_runtime) + pending;
}

static __always_inline u64 ciel_cgroup_base_stat_contrib(struct cgroup *cgrp, u64 pending)
{
	return pending + READ_ONCE(cgrp->bstat.cputime.sum_exec_runtime) -
	       READ_ONCE(cgrp->last_bstat.cputime.sum_exec_runtime);
}

/*
 * ciel_root_cgroup_cputime - root_cgroup_cputime() (rstat.c, 6.1): the v2 root's
 * cpu.stat usage is not rstat-based but the sum over possible CPUs of kernel_cpustat
 * USER + NICE + SYSTEM + IRQ + SOFTIRQ + STEAL (ns). Reads per_cpu(kernel_cpustat, cpu)
 * directly (kcpustat_cpu_fetch() is out of line; without nohz_full vtime it is a copy).
 * out: u64 ns.
 */
static __always_inline u64 ciel_root_cgroup_cputime(struct ciel_ctx *ctx)
{
	u64 sum = 0;
	u32 i, cpu;

	ciel_for_each_cpu(i, cpu, ctx) {
		const u64 *cs = kcpustat_cpu(cpu).cpustat;

		sum += READ_ONCE(cs[CPUTIME_USER]) + READ_ONCE(cs[CPUTIME_NICE]) +
		       READ_ONCE(cs[CPUTIME_SYSTEM]) + READ_ONCE(cs[CPUTIME_IRQ]) +
		       READ_ONCE(cs[CPUTIME_SOFTIRQ]) + READ_ONCE(cs[CPUTIME_STEAL]);
	}
	return sum;
}

#if IS_ENABLED(CONFIG_CGROUP_CPUACCT)
/*
 * ciel_cpuusage_read - cpuusage_read() / cpuacct_cpuusage_read(ca, cpu,
 * CPUACCT_STAT_NSTATS) (kernel/sched/cpuacct.c, 6.1): v1 cpuacct.usage = sum over
 * possible CPUs of *per_cpu_ptr(ca->cpuusage, cpu). cpuacct_charge() adds to the
 * task's cpuacct and every ancestor, so the value is hierarchical and cumulative.
 * in: struct cgroup_subsys_state * (cpuacct css); out: u64 ns.
 */
static __always_inline u64 ciel_cpuusage_read(struct ciel_ctx *ctx, struct cgroup_subsys_state *css)
{
	struct cpuacct *ca = container_of(css, struct cpuacct, css);
	u64 __percpu *usage = READ_ONCE(ca->cpuusage);
	u64 sum = 0;
	u32 i, cpu;

	if (!usage)
		return 0;
	ciel_for_each_cpu(i, cpu, ctx)
		sum += READ_ONCE(*per_cpu_ptr(usage, cpu));
	return sum;
}
#endif

/* ---- memory (mm/memcontrol.c, 6.1) -------------------------------------------- */

#define CIEL_MEM_ANON	0	/* NR_ANON_MAPPED: v2 memory.stat "anon", v1 "rss" */
#define CIEL_MEM_FILE	1	/* NR_FILE_PAGES:  v2 memory.stat "file", v1 "cache" */
/*
 * NR_INACTIVE_FILE (NR_LRU_BASE + LRU_INACTIVE_FILE): v2 memory.stat "inactive_file",
 * v1 memory.stat "total_inactive_file" (6.1 memcg_stat_show prints memcg_page_state(),
 * the hierarchical rstat value, for every total_* line; the plain "inactive_file" line
 * is memcg_page_state_local()). The LRU sizes are node items: update_lru_size() ->
 * __mod_lruvec_state() moves the memcg's per-node lruvec counters like anon/file, so
 * the flushed + pending computation below applies unchanged. cAdvisor's working set
 * is usage - inactive_file (v2) / usage - total_inactive_file (v1).
 */
#define CIEL_MEM_INACTIVE_FILE	2
_Static_assert(PAGE_SIZE == 4096, "ciel_cgroup_rec.memory_inactive_file_pages counts 4 KiB pages");
#define CIEL_MEM_NR	3

#if IS_ENABLED(CONFIG_MEMCG)
/*
 * Three generations of memcg statistics (mm/memcontrol.c):
 *
 *  < 5.13  no rstat (5.10): memcg->vmstats[] are atomic, hierarchical totals that
 *          __mod_memcg_state() moves up all ancestors once a per-CPU batch passes
 *          MEMCG_CHARGE_BATCH; memory.stat prints them as they are (no flush, pending
 *          per-CPU batches are not included), memcg_page_state_local() sums the per-CPU
 *          memcg->vmstats_local[]. So: flushed = vmstats[idx], pending = 0.
 *  5.13 .. 6.9  rstat (commit "mm: memcontrol: switch to rstat", 5.13): the
 *          per-node struct lruvec_stats is embedded in mem_cgroup_per_node and public, and
 *          indexed by the node_stat_item itself (6.1 reasoning below).
 *  >= 6.10 pn->lruvec_stats points to a struct private to memcontrol.c, densely indexed
 *          through mem_cgroup_stats_index[] (commit "memcg: dynamically
 *          allocate lruvec_stats", 6.10; ciel_private.h mirrors it, its length comes from
 *          the kernel's BTF); the flush arithmetic is the 6.1 one, plus state_local.
 *
 * For node items (NR_ANON_MAPPED, NR_FILE_PAGES, NR_INACTIVE_FILE) __mod_memcg_lruvec_state()
 * updates the memcg and the lruvec per-CPU counters together and the flush propagates both
 * the same way, so memcg_page_state(memcg, idx) == sum over nodes of the lruvec copies.
 */
static __always_inline enum node_stat_item ciel_mem_item(int item)
{
	return item == CIEL_MEM_ANON ? NR_ANON_MAPPED :
	       item == CIEL_MEM_FILE ? NR_FILE_PAGES : NR_INACTIVE_FILE;
}

#if CIEL_SINCE(5, 13)
/* memcg->nodeinfo[nid] (6.1 flexible array, for_each_node allocation); out: may be NULL */
static __always_inline struct mem_cgroup_per_node *
ciel_memcg_nodeinfo(struct mem_cgroup *memcg, int nid)
{
	return READ_ONCE(memcg->nodeinfo[nid]);
}

#if CIEL_SINCE(6, 10)
/* memcg_stats_index(idx): the dense index of a node item in the private arrays, or -1 */
static __always_inline int ciel_mem_index(enum node_stat_item idx)
{
	int i = READ_ONCE(mem_cgroup_stats_index[idx]);

	return (unsigned int)i < CIEL_NR_MEMCG_NODE_STAT_ITEMS ? i : -1;
}
#define CIEL_PN_STATS(pn)	((struct lruvec_stats *)READ_ONCE((pn)->lruvec_stats))
#else
static __always_inline int ciel_mem_index(enum node_stat_item idx)
{
	return idx;
}
#define CIEL_PN_STATS(pn)	(&(pn)->lruvec_stats)
#endif
#endif /* 5.13 */

/*
 * ciel_memcg_pending / ciel_memcg_stat_flushed (pages, per CIEL_MEM_* item):
 * 6.1 mem_cgroup_css_rstat_flush(css, cpu), for each node's lruvec stats:
 *     delta = pn->state_pending[i]; pn->state_pending[i] = 0
 *     delta += percpu state[i] - state_prev[i];  state_prev = state
 *     pn->state[i] += delta;  parent_pn->state_pending[i] += delta   (any parent)
 * So after a full flush: state(C) = state(C) + pending(C) + sum over strict
 * descendants D of pending(D), with pending(X) = state_pending + sum over CPUs of
 * (state - state_prev). memory.stat (v2, memory_stat_format) prints
 * max(state, 0) * PAGE_SIZE; the guest itself flushes only past a threshold
 * (mem_cgroup_flush_stats), so this is at least as fresh as what it prints.
 */
static __always_inline long ciel_memcg_pending(struct ciel_ctx *ctx, struct mem_cgroup *memcg, int item)
{
#if CIEL_SINCE(5, 13)
	int idx = ciel_mem_index(ciel_mem_item(item));
	long sum = 0;
	u32 n, i, nid, cpu;

	if (idx < 0)
		return 0;
	ciel_for_each_node(n, nid, ctx) {
		struct mem_cgroup_per_node *pn = ciel_memcg_nodeinfo(memcg, nid);
		struct lruvec_stats_percpu __percpu *lp;
		struct lruvec_stats *ls;

		if (!pn || !(ls = CIEL_PN_STATS(pn)))
			continue;
		sum += READ_ONCE(ls->state_pending[idx]);
		lp = READ_ONCE(pn->lruvec_stats_percpu);
		if (!lp)
			continue;
		ciel_for_each_cpu(i, cpu, ctx) {
			struct lruvec_stats_percpu *l = per_cpu_ptr(lp, cpu);

			sum += READ_ONCE(l->state[idx]) - READ_ONCE(l->state_prev[idx]);
		}
	}
	return sum;
#else
	return 0;	/* < 5.13: memory.stat never includes the per-CPU batches */
#endif
}

/* flushed part: sum over nodes of pn->lruvec_stats.state[idx] (< 5.13: vmstats[idx]); self = this + pending */
static __always_inline long ciel_memcg_stat_flushed(struct ciel_ctx *ctx, struct mem_cgroup *memcg,
						    int item)
{
#if CIEL_SINCE(5, 13)
	int idx = ciel_mem_index(ciel_mem_item(item));
	long sum = 0;
	u32 n, nid;

	if (idx < 0)
		return 0;
	ciel_for_each_node(n, nid, ctx) {
		struct mem_cgroup_per_node *pn = ciel_memcg_nodeinfo(memcg, nid);
		struct lruvec_stats *ls;

		if (pn && (ls = CIEL_PN_STATS(pn)))
			sum += READ_ONCE(ls->state[idx]);
	}
	return sum;
#else
	return atomic_long_read(&memcg->vmstats[ciel_mem_item(item)]);
#endif
}


/*
 * ciel_memcg_page_state_local - memcg_page_state_local() (6.1): the non-hierarchical
 * count = sum over CPUs of the memcg's own per-CPU counters (never reset), here summed
 * over the per-node copies (lruvec_page_state_local()). v1 memory.stat "rss"/"cache"
 * (memcg1_stat_format) print this * PAGE_SIZE. out: pages (clamped >= 0).
 * < 5.13: sum over CPUs of memcg->vmstats_local->stat[idx] (5.10 memcg_page_state_local).
 * >= 6.10: the flushed state_local + the unflushed per-CPU deltas (state - state_prev).
 */
static __always_inline unsigned long ciel_memcg_page_state_local(struct ciel_ctx *ctx, struct mem_cgroup *memcg,
						 int item)
{
	long sum = 0;
#if CIEL_SINCE(5, 13)
	int idx = ciel_mem_index(ciel_mem_item(item));
	u32 n, i, nid, cpu;

	if (idx < 0)
		return 0;
	ciel_for_each_node(n, nid, ctx) {
		struct mem_cgroup_per_node *pn = ciel_memcg_nodeinfo(memcg, nid);
		struct lruvec_stats_percpu __percpu *lp;

		if (!pn || !(lp = READ_ONCE(pn->lruvec_stats_percpu)))
			continue;
#if CIEL_SINCE(6, 10)
		{
			struct lruvec_stats *ls = CIEL_PN_STATS(pn);

			if (ls)
				sum += READ_ONCE(ls->state_local[idx]);
		}
		ciel_for_each_cpu(i, cpu, ctx)
			sum += READ_ONCE(per_cpu_ptr(lp, cpu)->state[idx]) -
			       READ_ONCE(per_cpu_ptr(lp, cpu)->state_prev[idx]);
#else
		ciel_for_each_cpu(i, cpu, ctx)
			sum += READ_ONCE(per_cpu_ptr(lp, cpu)->state[idx]);
#endif
	}
#else
	struct memcg_vmstats_percpu __percpu *vl = READ_ONCE(memcg->vmstats_local);
	u32 i, cpu;

	if (vl) {
		ciel_for_each_cpu(i, cpu, ctx)
			sum += READ_ONCE(per_cpu_ptr(vl, cpu)->stat[ciel_mem_item(item)]);
	}
#endif
	return sum < 0 ? 0 : sum;
}

/*
 * ciel_mem_cgroup_usage - mem_cgroup_usage(memcg, false) (6.1) in pages: non-root:
 * page_counter_read(&memcg->memory) (v2 memory.current, v1 memory.usage_in_bytes);
 * root: NR_FILE_PAGES + NR_ANON_MAPPED of the (fully flushed) hierarchical stats, which
 * the caller passes in because they need the whole subtree.
 */
static __always_inline unsigned long ciel_mem_cgroup_usage(struct mem_cgroup *memcg, bool is_root,
					   long flushed_anon, long flushed_file)
{
	if (is_root)
		return (flushed_anon > 0 ? flushed_anon : 0) + (flushed_file > 0 ? flushed_file : 0);
	return page_counter_read(&memcg->memory);
}
#endif /* CONFIG_MEMCG */

/* ---- block I/O (block/blk-cgroup.c, 6.1) -------------------------------------- */

#if IS_ENABLED(CONFIG_BLK_CGROUP)
/*
 * 6.1.192 blkcg_rstat_flush(css, cpu) (no llist yet), for each blkg of a non-root blkcg:
 *     delta = percpu cur - percpu last;  blkg->iostat.cur += delta;  percpu last = cur
 *     if (blkg->parent && blkg->parent->parent):      (parent is not the root blkg)
 *         parent->iostat.cur += blkg->iostat.cur - blkg->iostat.last;  last = cur
 * Same shape as the cpu rstat: after a full flush of C,
 *     cur(C's blkg on q) = cur + pending + sum over strict descendant blkgs E on q of
 *                          (pending(E) + E.cur - E.last)
 * and io.stat (blkcg_print_one_stat) prints cur.bytes[READ/WRITE] per online blkg
 * (= per device); we sum over devices. The root's io.stat comes from disk stats
 * (blkcg_fill_root_iostats), which we do not reproduce (no CIEL_REC_IO on the root).
 */
struct ciel_io { u64 rbytes, wbytes; };

/* Per-CPU deltas of one blkg not yet flushed: sum over CPUs of percpu cur - last
 * (READ/WRITE bytes). in: struct blkcg_gq *; out: *io (added to). */
static __always_inline void ciel_blkg_pending(struct ciel_ctx *ctx, struct blkcg_gq *blkg, struct ciel_io *io)
{
	struct blkg_iostat_set __percpu *pc = READ_ONCE(blkg->iostat_cpu);
	u32 i, cpu;

	if (!pc)
		return;
	ciel_for_each_cpu(i, cpu, ctx) {
		struct blkg_iostat_set *bisc = per_cpu_ptr(pc, cpu);

		io->rbytes += READ_ONCE(bisc->cur.bytes[CIEL_BLKG_IOSTAT_READ]) -
			      READ_ONCE(bisc->last.bytes[CIEL_BLKG_IOSTAT_READ]);
		io->wbytes += READ_ONCE(bisc->cur.bytes[CIEL_BLKG_IOSTAT_WRITE]) -
			      READ_ONCE(bisc->last.bytes[CIEL_BLKG_IOSTAT_WRITE]);
	}
}

/*
 * ciel_blkcg_iostat - io.stat numbers of one blkcg summed over its online blkgs
 * (blkcg_print_stat -> blkcg_print_one_stat, 6.1). One pass over blkcg->blkg_list:
 *   v2 (local == false): *self += cur + pending; *contrib += pending + cur - last
 *                        (what a strict descendant still owes its ancestors)
 *   v1 (local == true):  *self += sum over CPUs of percpu cur (this cgroup's own bios)
 * in: struct cgroup_subsys_state * (io css), bool local; out: *self, *contrib (added to).
 */
static __always_inline void ciel_blkcg_iostat(struct ciel_ctx *ctx, struct cgroup_subsys_state *css,
					      bool local, struct ciel_io *self, struct ciel_io *contrib)
{
	struct blkcg *blkcg = container_of(css, struct blkcg, css);
	struct blkcg_gq *blkg;
	int budget = CIEL_MAX_BLKGS;
	u32 i, cpu;

	ciel_hlist_for_each_entry(blkg, &blkcg->blkg_list, blkcg_node, budget) {
		if (!READ_ONCE(blkg->online))
			continue;
		if (local) {
			struct blkg_iostat_set __percpu *pc = READ_ONCE(blkg->iostat_cpu);

			if (!pc)
				continue;
			ciel_for_each_cpu(i, cpu, ctx) {
				struct blkg_iostat_set *bisc = per_cpu_ptr(pc, cpu);

				self->rbytes += READ_ONCE(bisc->cur.bytes[CIEL_BLKG_IOSTAT_READ]);
				self->wbytes += READ_ONCE(bisc->cur.bytes[CIEL_BLKG_IOSTAT_WRITE]);
			}
		} else {
			struct ciel_io pend = { 0, 0 };
			u64 cr = READ_ONCE(blkg->iostat.cur.bytes[CIEL_BLKG_IOSTAT_READ]);
			u64 cw = READ_ONCE(blkg->iostat.cur.bytes[CIEL_BLKG_IOSTAT_WRITE]);

			ciel_blkg_pending(ctx, blkg, &pend);
			self->rbytes += cr + pend.rbytes;
			self->wbytes += cw + pend.wbytes;
			contrib->rbytes += pend.rbytes + cr -
					   READ_ONCE(blkg->iostat.last.bytes[CIEL_BLKG_IOSTAT_READ]);
			contrib->wbytes += pend.wbytes + cw -
					   READ_ONCE(blkg->iostat.last.bytes[CIEL_BLKG_IOSTAT_WRITE]);
		}
	}
	if (budget < 0)
		ctx->hdr_flags |= CIEL_HDR_TRUNC_LIST;
}
#endif /* CONFIG_BLK_CGROUP */

/* ---- pids (kernel/cgroup/pids.c, 6.1) ----------------------------------------- */

#if IS_ENABLED(CONFIG_CGROUP_PIDS)
/*
 * ciel_pids_current_read - pids_current_read(): atomic64_read(&pids->counter).
 * pids_charge() charges the cgroup and every ancestor, so it is hierarchical.
 * in: struct cgroup_subsys_state * (pids css); out: u64.
 */
static __always_inline u64 ciel_pids_current_read(struct cgroup_subsys_state *css)
{
	struct pids_cgroup *pids = container_of(css, struct pids_cgroup, css);
	s64 v = atomic64_read(&pids->counter);

	return v < 0 ? 0 : v;
}
#endif

#endif /* CIEL_CGROUP_H */
