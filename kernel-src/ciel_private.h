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
 * blkg/lnode/lqueued in 6.2, veth_rq gained page_pool in 6.3, pids_cgroup its event
 * arrays in 6.11, veth_priv a peer tracker after 6.12; cpuacct is unchanged 5.10..7.3).
 * Each difference is written where it is, with CIEL_SINCE (ciel_version.h).
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
#include <linux/memcontrol.h>

#include "ciel_version.h"

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
#if CIEL_SINCE(6, 1)
	int64_t				watermark;	/* pids.peak: after 5.10, in 6.1 BTF */
#endif
	struct cgroup_file		events_file;
#if CIEL_SINCE(6, 11)
	/* commit "cgroup/pids: Make event counters hierarchical" (6.11):
	 * pids.events.local and per-event arrays (enum pidcg_event: PIDCG_MAX, PIDCG_FORKFAIL) */
	struct cgroup_file		events_local_file;
	atomic64_t			events[2];
	atomic64_t			events_local[2];
#else
	atomic64_t			events_limit;
#endif
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

#if IS_ENABLED(CONFIG_BLK_CGROUP) && !CIEL_SINCE(5, 18)
/* include/linux/blk-cgroup.h: public until 5.18 moved it to block/blk-cgroup.h (5.10) */
#include <linux/blk-cgroup.h>
#define CIEL_BLKG_IOSTAT_READ	BLKG_IOSTAT_READ
#define CIEL_BLKG_IOSTAT_WRITE	BLKG_IOSTAT_WRITE
#elif IS_ENABLED(CONFIG_BLK_CGROUP)
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
#if CIEL_SINCE(6, 2)
	/* commit "blk-cgroup: Optimize blkcg_rstat_flush()" (6.2): per-CPU
	 * lockless lists of updated iostat sets; the flush arithmetic is unchanged */
	struct blkcg_gq		*blkg;
	struct llist_node	lnode;
	int			lqueued;
#endif
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
#if CIEL_SINCE(6, 12)
	/* after 6.1, checked against 6.12 and 7.3 BTF */
	atomic_t			congestion_count;
#endif
	struct radix_tree_root		blkg_tree;
	struct blkcg_gq	__rcu		*blkg_hint;
	struct hlist_head		blkg_list;
	struct blkcg_policy_data	*cpd[BLKCG_MAX_POLS];
	struct list_head		all_blkcgs_node;
#if CIEL_SINCE(6, 2)
	struct llist_head __percpu	*lhead;	/* 3b8cc6298724, as above */
#endif
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
#if CIEL_SINCE(5, 13)
	struct napi_struct __rcu *napi;	/* commit "veth: allow enabling NAPI even without XDP" (5.13) */
#endif
	struct net_device	*dev;
	struct bpf_prog __rcu	*xdp_prog;
	struct xdp_mem_info	xdp_mem;
	struct veth_rq_stats	stats;
	bool			rx_notify_masked;
	struct ptr_ring		xdp_ring;
	struct xdp_rxq_info	xdp_rxq;
#if CIEL_SINCE(6, 3)
	struct page_pool	*page_pool;	/* "net: veth: add page_pool for page recycling" (6.3; in 6.12 and 7.3 BTF) */
#endif
};

struct veth_priv {				/* netdev_priv(dev) of a veth device */
	struct net_device __rcu	*peer;
	atomic64_t		dropped;
	struct bpf_prog		*_xdp_prog;
	struct veth_rq		*rq;		/* dev->num_rx_queues entries */
	unsigned int		requested_headroom;
#if CIEL_SINCE(7, 0)
	netdevice_tracker	peer_tracker;	/* after 6.12, checked against 7.3 veth.ko BTF */
#endif
};

#if IS_ENABLED(CONFIG_MEMCG) && CIEL_SINCE(6, 10)
/*
 * mm/memcontrol.c (6.10+, commit "memcg: dynamically allocate lruvec_stats"):
 * the per-node statistics moved out of the header, sized by the number of node items memcg
 * tracks (31 on 6.12, 50 on 7.3), which only memcontrol.c knows: `ciel build` passes it in
 * from the kernel's BTF (sizeof(struct lruvec_stats_percpu) / 16) and checks the result.
 */
#ifndef CIEL_NR_MEMCG_NODE_STAT_ITEMS
#error "CIEL_NR_MEMCG_NODE_STAT_ITEMS is needed on 6.10+ (ciel build derives it from the kernel's BTF)"
#endif
struct lruvec_stats_percpu {
	long	state[CIEL_NR_MEMCG_NODE_STAT_ITEMS];		/* per CPU, cumulative */
	long	state_prev[CIEL_NR_MEMCG_NODE_STAT_ITEMS];	/* already propagated */
};

struct lruvec_stats {
	long	state[CIEL_NR_MEMCG_NODE_STAT_ITEMS];		/* hierarchical, flushed */
	long	state_local[CIEL_NR_MEMCG_NODE_STAT_ITEMS];	/* this cgroup, flushed */
	long	state_pending[CIEL_NR_MEMCG_NODE_STAT_ITEMS];	/* from children, not yet applied */
};

/* memcg_stats_index(): node_stat_item -> dense index, filled at boot (u8; U8_MAX = none) */
extern u8 mem_cgroup_stats_index[];
#endif

#endif /* CIEL_PRIVATE_H */
