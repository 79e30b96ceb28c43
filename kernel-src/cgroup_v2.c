// SPDX-License-Identifier: MIT
/*
 * cgroup_v2.c - monitor entry point for the cgroup v2 (default) hierarchy.
 *
 * long ciel_mon_cgroup_v2(void *out, unsigned long out_len, const void *in,
 *                         unsigned long in_len)
 *   in:  optional struct ciel_mon_args (ciel_abi.h)
 *   out: struct ciel_mon_hdr + struct ciel_cgroup_rec[], pre-order from "/"
 *   ret: number of records, or -ENOSPC / -EINVAL
 *
 * Walks cgrp_dfl_root.cgrp. Numbers per record (Linux 6.1, details in ciel_cgroup.h):
 *   cpu_usage_ns        cpu.stat usage_usec * 1000 as after a full rstat flush
 *                       (root: kernel_cpustat sum, like root_cgroup_cputime)
 *   memory_usage_bytes  memory.current = page_counter_read(&memcg->memory) * PAGE_SIZE
 *   memory_rss_bytes    memory.stat "anon" (NR_ANON_MAPPED, hierarchical, flushed+pending)
 *   memory_cache_bytes  memory.stat "file" (NR_FILE_PAGES, same)
 *   io_{read,write}_bytes io.stat rbytes/wbytes summed over devices (flushed+pending)
 *   pids                pids.current
 *   nr_tasks            tasks directly in the cgroup (cgroup_task_count)
 *   net_*               device args.ifname (eth0) in the netns of one of its tasks
 */
#include "ciel_walk.h"

long ciel_mon_cgroup_v2(void *out, unsigned long out_len, const void *in, unsigned long in_len)
{
	struct ciel_walk w;
	long err;

	err = ciel_mon_begin(&w, out, out_len, in, in_len);
	if (err)
		return err;
	ciel_cgroup_mode(&w.ctx, out);
	w.v1 = false;
	w.hierarchy_id = READ_ONCE(cgrp_dfl_root.hierarchy_id);
	w.subsys_mask = READ_ONCE(cgrp_dfl_root.subsys_mask);
	ciel_walk_hierarchy(&w, ciel_out_recs(out), &cgrp_dfl_root.cgrp);
	return ciel_mon_end(&w, out);
}
