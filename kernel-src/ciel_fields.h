/* SPDX-License-Identifier: MIT */
/*
 * ciel_fields.h - every struct field the monitors read, as an X-macro list
 * X(struct tag, field, subfield, ...): path components are separate arguments, the
 * CIEL_LAYOUT convention of ciel_layout.h. layout.c turns the list into CIEL_LAYOUT /
 * CIEL_SIZEOF entries, which `ciel build` checks against the guest's BTF, and
 * test/kernel-src/layout.test.ts checks against vmlinux + veth.ko BTF.
 * Keep it in sync with the code: one line per field used.
 */
#ifndef CIEL_FIELDS_H
#define CIEL_FIELDS_H

#include "ciel_version.h"

/* the parts that differ per kernel line (see the helpers for the why) */
#if CIEL_SINCE(6, 16)
#define CIEL_FIELDS_RSTAT(X)							\
	X(cgroup, rstat_base_cpu)						\
	X(cgroup_rstat_base_cpu, bstat, cputime, sum_exec_runtime)		\
	X(cgroup_rstat_base_cpu, last_bstat, cputime, sum_exec_runtime)
#else
#define CIEL_FIELDS_RSTAT(X)							\
	X(cgroup, rstat_cpu)							\
	X(cgroup_rstat_cpu, bstat, cputime, sum_exec_runtime)			\
	X(cgroup_rstat_cpu, last_bstat, cputime, sum_exec_runtime)
#endif

#if CIEL_SINCE(6, 15)
#define CIEL_FIELDS_KERNFS(X) X(kernfs_node, __parent)
#else
#define CIEL_FIELDS_KERNFS(X) X(kernfs_node, parent)
#endif

#if CIEL_SINCE(6, 10)
#define CIEL_FIELDS_MEMCG(X)							\
	X(mem_cgroup, nodeinfo)							\
	X(mem_cgroup_per_node, lruvec_stats_percpu)				\
	X(mem_cgroup_per_node, lruvec_stats)					\
	X(lruvec_stats, state)							\
	X(lruvec_stats, state_local)						\
	X(lruvec_stats, state_pending)						\
	X(lruvec_stats_percpu, state)						\
	X(lruvec_stats_percpu, state_prev)
#define CIEL_SIZES_MEMCG(X) X(lruvec_stats) X(lruvec_stats_percpu)
#elif CIEL_SINCE(5, 13)
#define CIEL_FIELDS_MEMCG(X)							\
	X(mem_cgroup, nodeinfo)							\
	X(mem_cgroup_per_node, lruvec_stats_percpu)				\
	X(mem_cgroup_per_node, lruvec_stats, state)				\
	X(mem_cgroup_per_node, lruvec_stats, state_pending)			\
	X(lruvec_stats_percpu, state)						\
	X(lruvec_stats_percpu, state_prev)
#define CIEL_SIZES_MEMCG(X)
#else
#define CIEL_FIELDS_MEMCG(X)							\
	X(mem_cgroup, vmstats)							\
	X(mem_cgroup, vmstats_local)						\
	X(memcg_vmstats_percpu, stat)
#define CIEL_SIZES_MEMCG(X)
#endif

#ifdef CIEL_NO_PCPU_DSTATS	/* 5.10 */
#define CIEL_FIELDS_DSTATS(X)
#else
#define CIEL_FIELDS_DSTATS(X)							\
	X(pcpu_dstats, rx_packets)						\
	X(pcpu_dstats, rx_bytes)						\
	X(pcpu_dstats, tx_packets)						\
	X(pcpu_dstats, tx_bytes)
#endif

#define CIEL_FIELDS(X)								\
	/* cgroup core (include/linux/cgroup-defs.h) */				\
	X(cgroup_subsys_state, children)					\
	X(cgroup_subsys_state, sibling)						\
	X(cgroup_subsys_state, flags)						\
	X(cgroup, self)								\
	X(cgroup, self, children)						\
	X(cgroup, self, sibling)							\
	X(cgroup, self, flags)							\
	X(cgroup, kn)								\
	X(cgroup, subsys)							\
	X(cgroup, cset_links)							\
	CIEL_FIELDS_RSTAT(X)							\
	X(cgroup, bstat, cputime, sum_exec_runtime)				\
	X(cgroup, last_bstat, cputime, sum_exec_runtime)				\
	X(cgroup, nr_descendants)						\
	X(cgroup_root, subsys_mask)						\
	X(cgroup_root, hierarchy_id)						\
	X(cgroup_root, root_list)						\
	X(cgroup_root, cgrp)							\
	X(cgrp_cset_link, cset)							\
	X(cgrp_cset_link, cset_link)						\
	X(css_set, tasks)							\
	X(css_set, nr_tasks)							\
	CIEL_FIELDS_KERNFS(X)							\
	X(kernfs_node, name)							\
	X(kernfs_node, id)							\
	X(task_struct, cg_list)							\
	X(task_struct, nsproxy)							\
	X(cpumask, bits)							\
	X(kernel_cpustat, cpustat)						\
	/* controllers */							\
	X(cpuacct, css)								\
	X(cpuacct, cpuusage)							\
	X(pids_cgroup, css)							\
	X(pids_cgroup, counter)							\
	X(mem_cgroup, css)							\
	X(mem_cgroup, memory, usage)						\
	CIEL_FIELDS_MEMCG(X)							\
	X(blkcg, css)								\
	X(blkcg, blkg_list)							\
	X(blkcg_gq, blkcg_node)							\
	X(blkcg_gq, online)							\
	X(blkcg_gq, iostat_cpu)							\
	X(blkcg_gq, iostat, cur, bytes)						\
	X(blkcg_gq, iostat, last, bytes)						\
	X(blkg_iostat_set, cur, bytes)						\
	X(blkg_iostat_set, last, bytes)						\
	/* network */								\
	X(nsproxy, net_ns)							\
	X(net, dev_base_head)							\
	X(net_device, name)							\
	X(net_device, dev_list)							\
	X(net_device, flags)							\
	X(net_device, stats, rx_packets)						\
	X(net_device, stats, tx_packets)						\
	X(net_device, stats, rx_bytes)						\
	X(net_device, stats, tx_bytes)						\
	X(net_device, lstats)							\
	X(net_device, rtnl_link_ops)						\
	X(net_device, num_rx_queues)						\
	X(rtnl_link_ops, kind)							\
	X(pcpu_lstats, packets)							\
	X(pcpu_lstats, bytes)							\
	X(pcpu_sw_netstats, rx_packets)						\
	X(pcpu_sw_netstats, rx_bytes)						\
	X(pcpu_sw_netstats, tx_packets)						\
	X(pcpu_sw_netstats, tx_bytes)						\
	CIEL_FIELDS_DSTATS(X)
/* not listable (bit-field, offsetof impossible): net_device.pcpu_stat_type:8 */

/*
 * Fields of structs defined in a module (drivers/net/veth.c -> veth.ko): their BTF is
 * veth.ko's split BTF on top of vmlinux's, not in vmlinux itself.
 */
#define CIEL_FIELDS_VETH(X)							\
	X(veth_priv, peer)							\
	X(veth_priv, rq)							\
	X(veth_rq, stats, vs, xdp_packets)					\
	X(veth_rq, stats, vs, xdp_bytes)

/* Struct sizes the code depends on (array strides, netdev_priv, container_of). */
#define CIEL_SIZES(X)								\
	X(cgroup)								\
	X(net_device)								\
	X(blkcg)								\
	X(blkcg_gq)								\
	X(blkg_iostat_set)							\
	X(pids_cgroup)								\
	X(cpuacct)								\
	X(cgrp_cset_link)							\
	CIEL_SIZES_MEMCG(X)

#define CIEL_SIZES_VETH(X)							\
	X(veth_rq)								\
	X(veth_priv)

#endif /* CIEL_FIELDS_H */
