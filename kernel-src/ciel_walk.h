/* SPDX-License-Identifier: MIT */
/*
 * ciel_walk.h - bounded pre-order walk of one cgroup hierarchy that fills
 * struct ciel_cgroup_rec records (ciel_abi.h), shared by the v2 and v1 monitors.
 *
 * The walk replaces css_for_each_descendant_pre() / css_next_descendant_pre() (out of
 * line in kernel/cgroup/cgroup.c) by following cgroup->self.children and
 * ->self.sibling with an explicit ancestor stack (max_depth), and stops after
 * args.max_cgroups visits (cycles in guest lists end there).
 *
 * Hierarchical rstat values (v2 cpu, memory.stat, io) need the pending deltas of all
 * strict descendants: each visited cgroup adds its contribution to the accumulators of
 * its ancestors on the stack, and a record's final numbers are written when the walk
 * leaves the cgroup (post-order). Checked against Linux 6.1 (Debian 6.1.192).
 *
 * With CIEL_ARG_CONTAINERS_ONLY the statistics are read only where they are asked for: the
 * root and Docker's container cgroups with what is below them (their hierarchical numbers
 * need it). Any other cgroup (a systemd guest has dozens) is walked for its name and id and
 * gives only what an asked-for ancestor still needs from it: the root's hierarchical memory
 * (memory.stat, usage) includes every memcg's pending deltas. cpu (the root's is
 * kernel_cpustat) and io (nothing flows into the root) need nothing from those cgroups.
 */
#ifndef CIEL_WALK_H
#define CIEL_WALK_H

/* The records follow the header in the caller's out buffer. */
#define ciel_out_recs(out)	((struct ciel_cgroup_rec *)((struct ciel_mon_hdr *)(out) + 1))

#include "ciel_cgroup.h"
#include "ciel_docker.h"
#include "ciel_net.h"

struct ciel_acc {
	struct cgroup	*cgrp;
	s32		rec;		/* record index, -1 when not written */
	u32		flags;		/* CIEL_REC_* of that record */
	u64		cpu;		/* v2: self + strict descendants' pending */
	long		mem[CIEL_MEM_NR];
	u64		io_r, io_w;
	bool		mem_root;	/* memcg is the hierarchy's root memcg */
	bool		in_container;	/* a Docker container's cgroup or below one */
};

/*
 * Walk state, on the entry point's stack. Pointers into `out` are never kept here but
 * passed as arguments (recs): every function is inlined into the entry point, so every
 * store in the final IR goes to an alloca or to an address computed from `out`.
 */
struct ciel_walk {
	struct ciel_ctx		ctx;		/* by value: &w->ctx is never a loaded pointer */
	u32			cap;		/* records that fit */
	u32			nr_records;	/* records written so far */
	u32			seen;		/* cgroups visited in this call (all walks) */
	bool			v1;
	u32			hierarchy_id;
	u32			subsys_mask;	/* controllers bound to this hierarchy */
	struct ciel_acc		acc[CIEL_MAX_DEPTH];
};

static __always_inline bool ciel_walk_has(struct ciel_walk *w, int ssid)
{
	return w->subsys_mask & (1u << ssid);
}

/* A cgroup whose statistics are not asked for (CIEL_ARG_CONTAINERS_ONLY, not the root, not in a
 * container): only its memcg's pending deltas, added to its ancestors (the root's hierarchical
 * memory numbers include them). Its own accumulators stay 0 and are never written out. */
static __always_inline void ciel_walk_not_asked(struct ciel_walk *w, struct cgroup *cgrp, int depth,
						u32 mask)
{
#if IS_ENABLED(CONFIG_MEMCG)
	if (mask & (1u << memory_cgrp_id)) {
		struct mem_cgroup *memcg = mem_cgroup_from_css(ciel_cgroup_css(cgrp, memory_cgrp_id));
		int it, d;

		for (it = 0; it < CIEL_MEM_NR; it++) {
			long c = ciel_memcg_pending(&w->ctx, memcg, it);

			for (d = 0; d < depth; d++)
				w->acc[d].mem[it] += c;
		}
	}
#endif
}

/* Called when entering cgroup `cgrp` at `depth`: read everything that is not
 * hierarchical, compute its rstat self values and add its contributions upwards.
 * in: struct cgroup * (guest), depth; out: recs[w->nr_records] (if room), w->acc[depth]. */
static __always_inline void ciel_walk_visit(struct ciel_walk *w, struct ciel_cgroup_rec *recs,
					    struct cgroup *cgrp, int depth)
{
	struct ciel_ctx *ctx = &w->ctx;
	struct ciel_acc *a = &w->acc[depth];
	struct cgroup_subsys_state *self = &cgrp->self;
	struct cgroup_subsys_state *css __maybe_unused;
	struct ciel_cgroup_rec *r = NULL;
	struct task_struct *task = NULL;
	bool trunc = false, dying;
	u32 flags = w->v1 ? CIEL_REC_V1 : 0;
	u32 mask = 0;
	bool asked;
	int ssid, d;

	w->seen++;
	a->cgrp = cgrp;
	a->rec = -1;
	a->cpu = 0;
	a->io_r = a->io_w = 0;
	a->mem_root = false;
	for (d = 0; d < CIEL_MEM_NR; d++)
		a->mem[d] = 0;
	a->in_container = depth && (w->acc[depth - 1].in_container ||
				    ((ctx->args.flags & CIEL_ARG_CONTAINERS_ONLY) &&
				     ciel_docker_cgroup(READ_ONCE(cgrp->kn))));
	asked = !depth || a->in_container || !(ctx->args.flags & CIEL_ARG_CONTAINERS_ONLY);

	dying = depth && !ciel_css_is_online(self);
	if (dying)
		flags |= CIEL_REC_DYING;
	if (!depth)
		flags |= CIEL_REC_ROOT;
	if (!dying || (ctx->args.flags & CIEL_ARG_INCLUDE_DYING)) {
		if (w->nr_records < w->cap) {
			a->rec = w->nr_records++;
			r = &recs[a->rec];
			*r = (struct ciel_cgroup_rec){ .parent_index = CIEL_NO_PARENT };
		} else {
			ctx->hdr_flags |= CIEL_HDR_TRUNC_OUT;
		}
	}

	for (ssid = 0; ssid < CGROUP_SUBSYS_COUNT; ssid++)
		if (ciel_walk_has(w, ssid) && ciel_cgroup_css(cgrp, ssid))
			mask |= 1u << ssid;

	if (!asked) {
		ciel_walk_not_asked(w, cgrp, depth, mask);
		flags |= CIEL_REC_NOT_ASKED;
	}

	/* ---- CPU ---- */
	if (asked && !w->v1) {
		if (!depth) {
			a->cpu = ciel_root_cgroup_cputime(ctx);
			flags |= CIEL_REC_CPU | CIEL_REC_CPU_KCPUSTAT;
		} else {
			u64 pend = ciel_cgroup_rstat_cpu_pending(ctx, cgrp);
			u64 c = ciel_cgroup_base_stat_contrib(cgrp, pend);

			a->cpu = ciel_cgroup_base_stat_self(cgrp, pend);
			flags |= CIEL_REC_CPU;
			for (d = 1; d < depth; d++)		/* depth 0 (root) uses kcpustat */
				w->acc[d].cpu += c;
		}
	}
#if IS_ENABLED(CONFIG_CGROUP_CPUACCT)
	else if (asked && (mask & (1u << cpuacct_cgrp_id))) {
		a->cpu = ciel_cpuusage_read(ctx, ciel_cgroup_css(cgrp, cpuacct_cgrp_id));
		flags |= CIEL_REC_CPU;
	}
#endif

	/* ---- memory ---- */
#if IS_ENABLED(CONFIG_MEMCG)
	if (asked && (mask & (1u << memory_cgrp_id))) {
		struct mem_cgroup *memcg = mem_cgroup_from_css(ciel_cgroup_css(cgrp, memory_cgrp_id));
		int it;

		a->mem_root = !depth;
		for (it = 0; it < CIEL_MEM_NR; it++) {
			long c = ciel_memcg_pending(ctx, memcg, it);

			a->mem[it] = ciel_memcg_stat_flushed(ctx, memcg, it) + c;
			for (d = 0; d < depth; d++)
				w->acc[d].mem[it] += c;
		}
		if (r) {
			if (depth)
				r->memory_usage_bytes =
					(u64)ciel_mem_cgroup_usage(memcg, false, 0, 0) * PAGE_SIZE;
			if (w->v1) {	/* v1 memory.stat rss/cache are the local counts */
				r->memory_rss_bytes = (u64)ciel_memcg_page_state_local(ctx, memcg,
							CIEL_MEM_ANON) * PAGE_SIZE;
				r->memory_cache_bytes = (u64)ciel_memcg_page_state_local(ctx, memcg,
							CIEL_MEM_FILE) * PAGE_SIZE;
			}
		}
		flags |= CIEL_REC_MEM;
	}
#endif

	/* ---- block I/O ---- */
#if IS_ENABLED(CONFIG_BLK_CGROUP)
	if (asked && (mask & (1u << io_cgrp_id)) && depth) {
		struct ciel_io io = { 0, 0 }, c = { 0, 0 };

		css = ciel_cgroup_css(cgrp, io_cgrp_id);
		ciel_blkcg_iostat(ctx, css, w->v1, &io, &c);
		if (!w->v1) {
			for (d = 1; d < depth; d++) {	/* nothing flows into the root blkg */
				w->acc[d].io_r += c.rbytes;
				w->acc[d].io_w += c.wbytes;
			}
		}
		a->io_r = io.rbytes;
		a->io_w = io.wbytes;
		flags |= CIEL_REC_IO;
	}
#endif

	a->flags = flags;
	if (!r)
		return;

	/* ---- identity, tasks, pids, net: written now ---- */
	ciel_kernfs_path(READ_ONCE(cgrp->kn), r->path, CIEL_PATH_MAX, &trunc);
	if (trunc)
		flags |= CIEL_REC_PATH_TRUNC;
	r->cgroup_id = cgroup_id(cgrp);
	r->level = depth;
	r->hierarchy_id = w->hierarchy_id;
	r->subsys_mask = mask;
	r->parent_index = depth && w->acc[depth - 1].rec >= 0 ? (u32)w->acc[depth - 1].rec
							      : CIEL_NO_PARENT;
	if (!asked) {
		a->flags = flags;
		return;
	}
	r->nr_tasks = ciel_cgroup_task_count(ctx, cgrp, &task);
	r->first_task = (u64)(unsigned long)task;
	if (task)
		flags |= CIEL_REC_TASK;

#if IS_ENABLED(CONFIG_CGROUP_PIDS)
	if (mask & (1u << pids_cgrp_id)) {
		r->pids = ciel_pids_current_read(ciel_cgroup_css(cgrp, pids_cgrp_id));
		flags |= CIEL_REC_PIDS;
	}
#endif

	if (task && !(ctx->args.flags & CIEL_ARG_NO_NET)) {
		struct ciel_netstats st = { 0, 0, 0, 0 };

		flags |= ciel_task_netdev_stats(ctx, task, &st);
		r->net_rx_bytes = st.rx_bytes;
		r->net_tx_bytes = st.tx_bytes;
		r->net_rx_packets = st.rx_packets;
		r->net_tx_packets = st.tx_packets;
	}
	a->flags = flags;
}

/* Called when the walk leaves the cgroup at `depth`: write the hierarchical numbers.
 * in: w->acc[depth]; out: recs[acc.rec] cpu/memory/io fields and flags. */
static __always_inline void ciel_walk_finish(struct ciel_walk *w, struct ciel_cgroup_rec *recs,
					     int depth)
{
	struct ciel_acc *a = &w->acc[depth];
	struct ciel_cgroup_rec *r;

	if (a->rec < 0)
		return;
	r = &recs[a->rec];
	r->flags = a->flags;
	if (a->flags & CIEL_REC_NOT_ASKED)
		return;		/* its accumulators hold only what asked-for descendants added */
	r->cpu_usage_ns = a->cpu;
	if (a->flags & CIEL_REC_MEM) {
		if (!w->v1) {
			r->memory_rss_bytes = (u64)(a->mem[0] > 0 ? a->mem[0] : 0) * PAGE_SIZE;
			r->memory_cache_bytes = (u64)(a->mem[1] > 0 ? a->mem[1] : 0) * PAGE_SIZE;
		}
		/* v2 inactive_file and v1 total_inactive_file are both hierarchical */
		r->memory_inactive_file_pages = a->mem[CIEL_MEM_INACTIVE_FILE] <= 0 ? 0 :
			a->mem[CIEL_MEM_INACTIVE_FILE] > 0xffffffffL ? 0xffffffffu :
			(u32)a->mem[CIEL_MEM_INACTIVE_FILE];
#if IS_ENABLED(CONFIG_MEMCG)
		if (a->mem_root)
			r->memory_usage_bytes =
				(u64)ciel_mem_cgroup_usage(NULL, true, a->mem[0], a->mem[1]) * PAGE_SIZE;
#endif
	}
	r->io_read_bytes = a->io_r;
	r->io_write_bytes = a->io_w;
}

/*
 * ciel_walk_hierarchy - css_for_each_descendant_pre(root) with bounded depth/count.
 * in: the hierarchy's root cgroup (&cgroup_root->cgrp); records appended to recs[].
 * One call site of ciel_walk_visit (it is large and inlined).
 */
static __always_inline void ciel_walk_hierarchy(struct ciel_walk *w, struct ciel_cgroup_rec *recs,
						struct cgroup *root)
{
	struct ciel_ctx *ctx = &w->ctx;
	struct cgroup *pos = root;
	u32 max_depth = ctx->args.max_depth;
	int depth = 0;

	for (;;) {
		struct list_head *children, *next;

		if (w->seen >= ctx->args.max_cgroups) {
			ctx->hdr_flags |= CIEL_HDR_TRUNC_LIMIT;
			break;
		}
		ciel_walk_visit(w, recs, pos, depth);

		/* descend to the first child */
		children = &pos->self.children;
		next = READ_ONCE(children->next);
		if (next != children) {
			if ((u32)depth + 1 < max_depth) {
				pos = container_of(next, struct cgroup, self.sibling);
				depth++;
				continue;
			}
			ctx->hdr_flags |= CIEL_HDR_TRUNC_DEPTH;
			w->acc[depth].flags |= CIEL_REC_DEPTH_TRUNC;
		}
		/* no (walkable) child: next sibling, climbing up as siblings run out */
		for (;;) {
			struct cgroup *parent;

			ciel_walk_finish(w, recs, depth);
			if (!depth)
				return;
			parent = w->acc[depth - 1].cgrp;
			next = READ_ONCE(pos->self.sibling.next);
			if (next != &parent->self.children) {
				pos = container_of(next, struct cgroup, self.sibling);
				break;
			}
			pos = parent;
			depth--;
		}
	}
	/* stopped early: still write what has been accumulated on the stack; the cgroup at
	 * `depth` was not visited in this iteration, only its ancestors are on the stack */
	for (depth--; depth >= 0; depth--)
		ciel_walk_finish(w, recs, depth);
}

/* ciel_mon_begin - common entry-point prologue: args, header, CPU/node lists. */
static __always_inline long ciel_mon_begin(struct ciel_walk *w, void *out,
			   unsigned long out_len, const void *in, unsigned long in_len)
{
	struct ciel_ctx *ctx = &w->ctx;
	struct ciel_mon_hdr *hdr = out;
	unsigned long cap;
	int err;

	if (!out || out_len < sizeof(*hdr))
		return -ENOSPC;
	err = ciel_parse_args(ctx, in, in_len);
	if (err)
		return err;
	*hdr = (struct ciel_mon_hdr){
		.magic = CIEL_ABI_MAGIC,
		.abi_version = CIEL_ABI_VERSION,
		.hdr_size = sizeof(struct ciel_mon_hdr),
		.rec_size = sizeof(struct ciel_cgroup_rec),
	};
	cap = (out_len - sizeof(*hdr)) / sizeof(struct ciel_cgroup_rec);
	w->nr_records = 0;
	w->cap = cap > 0x7fffffff ? 0x7fffffff : cap;
	w->seen = 0;
	ciel_collect_possible_cpus(ctx);
	ciel_collect_possible_nodes(ctx);
	hdr->nr_cpus = ctx->nr_cpus;
	hdr->nr_cpu_ids = ctx->nr_cpu_ids;
	hdr->nr_nodes = ctx->nr_nodes;
	return 0;
}

/*
 * ciel_cgroup_mode - what the guest set up, from the hierarchies themselves (mounts are
 * not visible from here): the v1 roots on cgroup_roots (the list also holds
 * cgrp_dfl_root) and their controllers, the controllers left on the default hierarchy
 * (controllers never bound to v1 stay there even when cgroup2 is not mounted) and whether
 * cgroups were created on the default hierarchy (nr_descendants of its root).
 * out: hdr->cgroup_mode, nr_v1_roots, v1_subsys_mask, dfl_subsys_mask, dfl_nr_descendants.
 */
static __always_inline void ciel_cgroup_mode(struct ciel_ctx *ctx, struct ciel_mon_hdr *hdr)
{
	struct cgroup_root *root;
	int budget = CIEL_MAX_LIST;
	u32 nr_v1 = 0, v1_mask = 0;
	int dfl_desc = READ_ONCE(cgrp_dfl_root.cgrp.nr_descendants);

	hdr->dfl_subsys_mask = READ_ONCE(cgrp_dfl_root.subsys_mask);
	ciel_list_for_each_entry(root, &cgroup_roots, root_list, budget) {
		if (root == &cgrp_dfl_root)
			continue;
		nr_v1++;
		v1_mask |= READ_ONCE(root->subsys_mask);
	}
	if (budget < 0)
		ctx->hdr_flags |= CIEL_HDR_TRUNC_LIST;
	hdr->nr_v1_roots = nr_v1;
	hdr->v1_subsys_mask = v1_mask;
	hdr->dfl_nr_descendants = dfl_desc < 0 ? 0 : dfl_desc;
	if (v1_mask)
		hdr->cgroup_mode = dfl_desc > 0 ? CIEL_CGMODE_HYBRID : CIEL_CGMODE_LEGACY;
	else
		hdr->cgroup_mode = hdr->dfl_subsys_mask ? CIEL_CGMODE_UNIFIED : CIEL_CGMODE_NONE;
}

static __always_inline long ciel_mon_end(struct ciel_walk *w,
					 struct ciel_mon_hdr *hdr)
{
	struct ciel_ctx *ctx = &w->ctx;

	hdr->nr_records = w->nr_records;
	hdr->nr_seen = w->seen;
	hdr->flags = ctx->hdr_flags;
	return w->nr_records;
}

#endif /* CIEL_WALK_H */
