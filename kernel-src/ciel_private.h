/* SPDX-License-Identifier: MIT */
/*
 * ciel_private.h - struct layouts the monitors need that Linux keeps out of its
 * public headers (they live in .c files or in private headers under kernel/, block/,
 * drivers/). They are re-declared here, by hand, member by member, using the guest's
 * own header types for every member, so flavour differences (rt's spinlock_t, lockdep,
 * ...) follow the headers automatically.
 *
 * Checked against: Debian linux 6.1.0-56-amd64 (6.1.192-2), its vmlinux BTF and the
 * split BTF of its veth.ko (test/kernel-src/layout.test.ts compares every field listed
 * in ciel_fields.h, offsets and struct sizes). Re-check when moving to another kernel
 * series: these are exactly the parts that drift (e.g. blkg_iostat_set gained
 * blkg/lnode/lqueued in 6.2, veth_rq gained page_pool in 6.3, veth_stats lost
 * rx_drops in 6.7, cpuacct/pids_cgroup have been stable since 5.x).
 *
 * Only the tag names the kernel uses are defined here, and only where the public headers
 * merely forward-declare them: if a future header defines one of them, the build fails
 * (redefinition) instead of silently using a stale copy.
 */
#ifndef CIEL_PRIVATE_H
#define CIEL_PRIVATE_H

#include <linux/types.h>
#include <linux/list.h>
#include <linux/cgroup-defs.h>
#include <linux/percpu-refcount.h>
#include <linux/u64_stats_sync.h>
#include <linux/workqueue.h>
#include <linux/xarray.h>
#include <linux/blkdev.h>
#include <linux/bio.h>
#include <linux/netdevice.h>
#include <linux/ptr_ring.h>
#include <net/xdp.h>

/* kernel/cgroup/cgroup-internal.h (6.1): one per (cgroup, css_set) pair */
struct cgrp_cset_link {
	struct cgroup		*cgrp;
	struct css_set		*cset;
	struct list_head	cset_link;	/* on cgroup->cset_links */
	struct list_head	cgrp_link;	/* on css_set->cgrp_links */
};

/* kernel/cgroup/cgroup-internal.h (6.1): all hierarchies; includes cgrp_dfl_root */
extern struct list_head cgroup_roots;

#if IS_ENABLED(CONFIG_CGROUP_PIDS)
/* kernel/cgroup/pids.c (6.1) */
struct pids_cgroup {
	struct cgroup_subsys_state	css;
	atomic64_t			counter;	/* pids.current */
	atomic64_t			limit;
	int64_t				watermark;
	struct cgroup_file		events_file;
	atomic64_t			events_limit;
};
#endif

#if IS_ENABLED(CONFIG_CGROUP_CPUACCT)
/* kernel/sched/cpuacct.c (6.1) */
struct cpuacct {
	struct cgroup_subsys_state	css;
	u64 __percpu			*cpuusage;	/* ns, cumulative, charged to every ancestor */
	struct kernel_cpustat __percpu	*cpustat;
};
#endif

#if IS_ENABLED(CONFIG_BLK_CGROUP)
/* block/blk-cgroup.h (6.1.y up to at least 6.1.192; 6.2+ adds blkg, lnode, lqueued) */
enum ciel_blkg_iostat_type {
	CIEL_BLKG_IOSTAT_READ,
	CIEL_BLKG_IOSTAT_WRITE,
	CIEL_BLKG_IOSTAT_DISCARD,
	CIEL_BLKG_IOSTAT_NR,
};

struct blkg_iostat {
	u64	bytes[CIEL_BLKG_IOSTAT_NR];
	u64	ios[CIEL_BLKG_IOSTAT_NR];
};

struct blkg_iostat_set {
	struct u64_stats_sync	sync;
	struct blkg_iostat	cur;	/* per-CPU: cumulative; global: flushed total */
	struct blkg_iostat	last;	/* what has already been propagated upwards */
};

struct blkcg_gq {
	struct request_queue		*q;
	struct list_head		q_node;
	struct hlist_node		blkcg_node;	/* on blkcg->blkg_list */
	struct blkcg			*blkcg;
	struct blkcg_gq			*parent;
	struct percpu_ref		refcnt;
	bool				online;
	struct blkg_iostat_set __percpu	*iostat_cpu;
	struct blkg_iostat_set		iostat;
	struct blkg_policy_data		*pd[BLKCG_MAX_POLS];
	spinlock_t			async_bio_lock;
	struct bio_list			async_bios;
	union {
		struct work_struct	async_bio_work;
		struct work_struct	free_work;
	};
	atomic_t			use_delay;
	atomic64_t			delay_nsec;
	atomic64_t			delay_start;
	u64				last_delay;
	int				last_use;
	struct rcu_head			rcu_head;
};

struct blkcg {
	struct cgroup_subsys_state	css;
	spinlock_t			lock;
	refcount_t			online_pin;
	struct radix_tree_root		blkg_tree;
	struct blkcg_gq	__rcu		*blkg_hint;
	struct hlist_head		blkg_list;
	struct blkcg_policy_data	*cpd[BLKCG_MAX_POLS];
	struct list_head		all_blkcgs_node;
#ifdef CONFIG_BLK_CGROUP_FC_APPID
	char				fc_app_id[FC_APPID_LEN];
#endif
#ifdef CONFIG_CGROUP_WRITEBACK
	struct list_head		cgwb_list;
#endif
};
#endif /* CONFIG_BLK_CGROUP */

/* drivers/net/veth.c (6.1): the driver is a module; its structs are in veth.ko's BTF */
struct veth_stats {
	u64	rx_drops;
	u64	xdp_packets;
	u64	xdp_bytes;
	u64	xdp_redirect;
	u64	xdp_drops;
	u64	xdp_tx;
	u64	xdp_tx_err;
	u64	peer_tq_xdp_xmit;
	u64	peer_tq_xdp_xmit_err;
};

struct veth_rq_stats {
	struct veth_stats	vs;
	struct u64_stats_sync	syncp;
};

struct veth_rq {
	struct napi_struct	xdp_napi;
	struct napi_struct __rcu *napi;
	struct net_device	*dev;
	struct bpf_prog __rcu	*xdp_prog;
	struct xdp_mem_info	xdp_mem;
	struct veth_rq_stats	stats;
	bool			rx_notify_masked;
	struct ptr_ring		xdp_ring;
	struct xdp_rxq_info	xdp_rxq;
};

struct veth_priv {				/* netdev_priv(dev) of a veth device */
	struct net_device __rcu	*peer;
	atomic64_t		dropped;
	struct bpf_prog		*_xdp_prog;
	struct veth_rq		*rq;		/* dev->num_rx_queues entries */
	unsigned int		requested_headroom;
};

#endif /* CIEL_PRIVATE_H */
