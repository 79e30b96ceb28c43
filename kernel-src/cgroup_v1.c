// SPDX-License-Identifier: MIT
/*
 * cgroup_v1.c - monitor entry point for the cgroup v1 hierarchies (the paper's setup:
 * Docker on cgroup v1 with cpuacct, memory, blkio mounted).
 *
 * long ciel_mon_cgroup_v1(void *out, unsigned long out_len, const void *in,
 *                         unsigned long in_len)
 *   in:  optional struct ciel_mon_args; args.hierarchy_id selects one hierarchy (0 = all)
 *   out: struct ciel_mon_hdr + struct ciel_cgroup_rec[]: for every v1 hierarchy on
 *        cgroup_roots (cgrp_dfl_root skipped), its cgroups in pre-order; rec.hierarchy_id
 *        and rec.subsys_mask tell which hierarchy / controllers a record comes from, the
 *        same container therefore appears once per hierarchy (join on path).
 *   ret: number of records, or -ENOSPC / -EINVAL
 *
 * Numbers per record, v1 file semantics (Linux 6.1, details in ciel_cgroup.h):
 *   cpu_usage_ns        cpuacct.usage (per-CPU cpuusage summed; hierarchical by charge)
 *   memory_usage_bytes  memory.usage_in_bytes (mem_cgroup_usage(memcg, false))
 *   memory_rss_bytes    memory.stat "rss"   (local NR_ANON_MAPPED)
 *   memory_cache_bytes  memory.stat "cache" (local NR_FILE_PAGES)
 *   io_{read,write}_bytes bytes of bios this cgroup itself submitted, summed over
 *                       devices: sum over CPUs of blkg->iostat_cpu cur.bytes (the
 *                       per-CPU blk_cgroup_bio_start() counters, maintained on v1 too).
 *                       This counts the same bios blkio.throttle.io_service_bytes
 *                       counts (once per bio, split bios not re-counted); read/write
 *                       only, discards excluded.
 *   pids, nr_tasks, net_* as for v2.
 */
#include "ciel_walk.h"

long ciel_mon_cgroup_v1(void *out, unsigned long out_len, const void *in, unsigned long in_len)
{
	struct ciel_walk w;
	struct cgroup_root *root;
	int budget = CIEL_MAX_LIST;
	long err;

	err = ciel_mon_begin(&w, out, out_len, in, in_len);
	if (err)
		return err;
	ciel_cgroup_mode(&w.ctx, out);
	w.v1 = true;
	ciel_list_for_each_entry(root, &cgroup_roots, root_list, budget) {
		if (root == &cgrp_dfl_root)
			continue;
		w.hierarchy_id = READ_ONCE(root->hierarchy_id);
		if (w.ctx.args.hierarchy_id && w.ctx.args.hierarchy_id != w.hierarchy_id)
			continue;
		w.subsys_mask = READ_ONCE(root->subsys_mask);
		ciel_walk_hierarchy(&w, ciel_out_recs(out), &root->cgrp);
	}
	if (budget < 0)
		w.ctx.hdr_flags |= CIEL_HDR_TRUNC_LIST;
	return ciel_mon_end(&w, out);
}
