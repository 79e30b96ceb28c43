/* SPDX-License-Identifier: MIT */
/*
 * ciel_net.h - per-container network counters read from a task's network namespace:
 * task->nsproxy->net_ns, device `ifname` (default eth0) on net->dev_base_head, then the
 * driver's own counters. dev_get_stats() would call dev->netdev_ops->ndo_get_stats64, a
 * guest function pointer we can never call, so each driver is re-expressed here.
 * Checked against Linux 6.1 (Debian 6.1.192: net/core/dev.c, drivers/net/veth.c,
 * drivers/net/loopback.c).
 *
 * Per-CPU counters: Debian's 6.1.y carries the 6.7 "move {l,t,d}stats allocation to
 * core" backport: struct net_device has pcpu_stat_type (NONE/LSTATS/TSTATS/DSTATS) saying
 * what the lstats/tstats/dstats union points to, and veth was switched from lstats to
 * tstats (6.1.0-56's veth.ko imports dev_fetch_sw_netstats, not dev_lstats_read). We
 * read the union according to pcpu_stat_type, so both veth generations are handled.
 * Headers without pcpu_stat_type (older 6.1 ABIs) need -DCIEL_NO_PCPU_STAT_TYPE
 * (then: lstats, the pre-backport veth).
 *
 * Per driver (what `ip -s link` / /proc/net/dev shows inside the container):
 *  veth (rtnl_link_ops->kind == "veth"), veth_get_stats64():
 *     own per-CPU stats (tstats: rx and tx; lstats: tx only)
 *     rx += own rx queues' XDP counters (rq[i].stats.vs.xdp_{bytes,packets}, all
 *           dev->num_rx_queues; frames that came in through NAPI/GRO/XDP)
 *     rx += peer's per-CPU tx (what the peer handed over without NAPI)
 *     tx += peer's rx queues' XDP counters
 *  loopback (IFF_LOOPBACK), loopback_get_stats64(): rx = tx = per-CPU lstats.
 *  anything else: dev->stats (struct net_device_stats) plus the per-CPU stats the core
 *     knows about (pcpu_stat_type: tstats rx/tx, dstats rx/tx, lstats as tx), i.e. what
 *     dev_get_tstats64()-style drivers report; drivers with private per-queue counters
 *     (virtio_net, e1000, ...) are not covered: flagged CIEL_REC_NET_GENERIC.
 */
#ifndef CIEL_NET_H
#define CIEL_NET_H

#include <linux/netdevice.h>
#include <linux/nsproxy.h>
#include <linux/sched.h>
#include <net/net_namespace.h>
#include <net/rtnetlink.h>

#include "ciel_helpers.h"
#include "ciel_private.h"

struct ciel_netstats { u64 rx_bytes, tx_bytes, rx_packets, tx_packets; };

#ifdef CIEL_NO_PCPU_STAT_TYPE	/* headers before the backport: no enum netdev_stat_type */
#define NETDEV_PCPU_STAT_NONE	0
#define NETDEV_PCPU_STAT_LSTATS	1
#define NETDEV_PCPU_STAT_TSTATS	2
#define NETDEV_PCPU_STAT_DSTATS	3
#endif

/*
 * ciel_task_net - task->nsproxy->net_ns (get_net_ns_by_pid without the refcount).
 * Exiting tasks have nsproxy == NULL. in: struct task_struct *; out: struct net * / NULL.
 */
static __always_inline struct net *ciel_task_net(struct task_struct *task)
{
	struct nsproxy *ns = READ_ONCE(task->nsproxy);

	return ns ? READ_ONCE(ns->net_ns) : NULL;
}

/*
 * ciel_dev_get_by_name - __dev_get_by_name() (net/core/dev.c, 6.1) by walking
 * for_each_netdev(net, dev) (net->dev_base_head / dev->dev_list) instead of the name
 * hash. in: struct net *, const char *name (local); out: struct net_device * / NULL.
 */
static __always_inline struct net_device *ciel_dev_get_by_name(struct ciel_ctx *ctx, struct net *net,
					       const char *name)
{
	struct net_device *dev;
	int budget = CIEL_MAX_LIST;

	ciel_list_for_each_entry(dev, &net->dev_base_head, dev_list, budget) {
		if (!ciel_strncmp(dev->name, name, IFNAMSIZ))
			return dev;
	}
	if (budget < 0)
		ctx->hdr_flags |= CIEL_HDR_TRUNC_LIST;
	return NULL;
}

/* dev->pcpu_stat_type, or NONE for headers without it */
static __always_inline int ciel_dev_pcpu_stat_type(struct net_device *dev)
{
#ifdef CIEL_NO_PCPU_STAT_TYPE
	return 0;
#else
	return dev->pcpu_stat_type;
#endif
}

/*
 * ciel_dev_fetch_pcpu_stats - dev_fetch_sw_netstats() / dev_lstats_read() /
 * dev_fetch_dstats() (net/core/dev.c, out of line there), chosen by `type`
 * (enum netdev_stat_type): sum over possible CPUs of the per-CPU struct the
 * lstats/tstats/dstats union points to. u64_stats_t are plain loads on 64-bit.
 * in: struct net_device *, int type; out: *st (added to). lstats have no direction:
 * their packets/bytes are added to tx (veth, dummy) and, if lstats_rx, to rx (loopback).
 */
static __always_inline void ciel_dev_fetch_pcpu_stats(struct ciel_ctx *ctx, struct net_device *dev,
						      int type, bool lstats_rx,
						      struct ciel_netstats *st)
{
	void __percpu *pc = READ_ONCE(dev->lstats);
	u32 i, cpu;

	if (!pc)
		return;
	ciel_for_each_cpu(i, cpu, ctx) {
		switch (type) {
#ifndef CIEL_NO_PCPU_STAT_TYPE	/* without the field every device reads as NONE */
		case NETDEV_PCPU_STAT_TSTATS: {
			const struct pcpu_sw_netstats *t = per_cpu_ptr((struct pcpu_sw_netstats __percpu *)pc, cpu);

			st->rx_packets += u64_stats_read(&t->rx_packets);
			st->rx_bytes += u64_stats_read(&t->rx_bytes);
			st->tx_packets += u64_stats_read(&t->tx_packets);
			st->tx_bytes += u64_stats_read(&t->tx_bytes);
			break;
		}
		case NETDEV_PCPU_STAT_DSTATS: {
			const struct pcpu_dstats *d = per_cpu_ptr((struct pcpu_dstats __percpu *)pc, cpu);

#if CIEL_SINCE(6, 9)
			/* pcpu_dstats counters became u64_stats_t after 6.1 (6.12 and 7.3 headers) */
			st->rx_packets += u64_stats_read(&d->rx_packets);
			st->rx_bytes += u64_stats_read(&d->rx_bytes);
			st->tx_packets += u64_stats_read(&d->tx_packets);
			st->tx_bytes += u64_stats_read(&d->tx_bytes);
#else
			st->rx_packets += READ_ONCE(d->rx_packets);
			st->rx_bytes += READ_ONCE(d->rx_bytes);
			st->tx_packets += READ_ONCE(d->tx_packets);
			st->tx_bytes += READ_ONCE(d->tx_bytes);
#endif
			break;
		}
#endif
		default: {	/* LSTATS, or NONE for a driver that set dev->lstats itself */
			const struct pcpu_lstats *l = per_cpu_ptr((struct pcpu_lstats __percpu *)pc, cpu);
			u64 p = u64_stats_read(&l->packets), b = u64_stats_read(&l->bytes);

			st->tx_packets += p;
			st->tx_bytes += b;
			if (lstats_rx) {
				st->rx_packets += p;
				st->rx_bytes += b;
			}
			break;
		}
		}
	}
}

/*
 * ciel_veth_stats_rx - veth_stats_rx() (drivers/net/veth.c, 6.1): sum of
 * priv->rq[i].stats.vs.xdp_{packets,bytes} over dev->num_rx_queues.
 * in: struct net_device * (a veth); out: *packets, *bytes (added to).
 */
static __always_inline void ciel_veth_stats_rx(struct net_device *dev, u64 *packets, u64 *bytes)
{
	struct veth_priv *priv = netdev_priv(dev);
	struct veth_rq *rq = READ_ONCE(priv->rq);
	unsigned int n = READ_ONCE(dev->num_rx_queues), i;

	if (!rq)
		return;
	if (n > CIEL_MAX_RXQ)
		n = CIEL_MAX_RXQ;
	for (i = 0; i < n; i++) {
		*packets += READ_ONCE(rq[i].stats.vs.xdp_packets);
		*bytes += READ_ONCE(rq[i].stats.vs.xdp_bytes);
	}
}

/* ciel_dev_is_veth - dev->rtnl_link_ops && !strcmp(dev->rtnl_link_ops->kind, "veth") */
static __always_inline bool ciel_dev_is_veth(struct net_device *dev)
{
	const struct rtnl_link_ops *ops = READ_ONCE(dev->rtnl_link_ops);
	const char *kind;

	if (!ops || !(kind = READ_ONCE(ops->kind)))
		return false;
	return !ciel_strncmp(kind, "veth", sizeof("veth"));
}

/*
 * ciel_dev_get_stats64 - dev_get_stats() per driver, see the table at the top.
 * in: struct net_device *; out: *st, returns the CIEL_REC_NET_* driver flag.
 */
static __always_inline u32 ciel_dev_get_stats64(struct ciel_ctx *ctx, struct net_device *dev,
						struct ciel_netstats *st)
{
	int type = ciel_dev_pcpu_stat_type(dev);

	if (ciel_dev_is_veth(dev)) {
		struct veth_priv *priv = netdev_priv(dev);
		struct net_device *peer = READ_ONCE(priv->peer);

		ciel_dev_fetch_pcpu_stats(ctx, dev, type, false, st);
		ciel_veth_stats_rx(dev, &st->rx_packets, &st->rx_bytes);
		if (peer) {
			struct ciel_netstats ps = { 0, 0, 0, 0 };

			ciel_dev_fetch_pcpu_stats(ctx, peer, ciel_dev_pcpu_stat_type(peer), false, &ps);
			st->rx_packets += ps.tx_packets;
			st->rx_bytes += ps.tx_bytes;
			ciel_veth_stats_rx(peer, &st->tx_packets, &st->tx_bytes);
		}
		return CIEL_REC_NET_VETH;
	}
	if (READ_ONCE(dev->flags) & IFF_LOOPBACK) {
		ciel_dev_fetch_pcpu_stats(ctx, dev, NETDEV_PCPU_STAT_LSTATS, true, st);
		return CIEL_REC_NET_LOOPBACK;
	}
	st->rx_packets = READ_ONCE(dev->stats.rx_packets);
	st->tx_packets = READ_ONCE(dev->stats.tx_packets);
	st->rx_bytes = READ_ONCE(dev->stats.rx_bytes);
	st->tx_bytes = READ_ONCE(dev->stats.tx_bytes);
	if (type != NETDEV_PCPU_STAT_NONE)
		ciel_dev_fetch_pcpu_stats(ctx, dev, type, false, st);
	return CIEL_REC_NET_GENERIC;
}

/*
 * ciel_task_netdev_stats - the whole lookup for one cgroup: task (a live task, see
 * ciel_cgroup_task_count) -> netns -> device ctx->args.ifname -> counters.
 * out: CIEL_REC_NET | driver flag, CIEL_REC_NET_NODEV, or 0 (task has no netns).
 */
static __always_inline u32 ciel_task_netdev_stats(struct ciel_ctx *ctx, struct task_struct *task,
				  struct ciel_netstats *st)
{
	struct net *net = ciel_task_net(task);
	struct net_device *dev;

	if (!net)
		return 0;
	dev = ciel_dev_get_by_name(ctx, net, ctx->args.ifname);
	if (!dev)
		return CIEL_REC_NET_NODEV;
	return CIEL_REC_NET | ciel_dev_get_stats64(ctx, dev, st);
}

#endif /* CIEL_NET_H */
