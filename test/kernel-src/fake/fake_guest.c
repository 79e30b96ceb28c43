// SPDX-License-Identifier: MIT
/*
 * fake_guest.c - a tiny "guest kernel" in host memory, for testing the monitors' logic
 * without a VM: compiled with the same guest headers and flags as the monitors, it
 * defines the kernel globals they reference (cgrp_dfl_root, cgroup_roots,
 * __per_cpu_offset, kernel_cpustat, nr_cpu_ids, __cpu_possible_mask, node_states,
 * nr_node_ids) and builds cgroup trees, rstat/memcg/blkcg/pids/cpuacct state, css_sets,
 * tasks, network namespaces and devices with known numbers.
 * Linked natively with the (uninstrumented) monitor IR, host pointers play guest
 * pointers. Expected values: test/kernel-src/monitor.test.ts.
 *
 * Per-CPU model: kernel_cpustat (a static per-CPU variable) sits at host address A;
 * CPU c's area is pcpu_area[c] and __per_cpu_offset[c] = pcpu_area[c] - A, so
 * per_cpu_ptr(A + off, c) = pcpu_area[c] + off. Dynamic per-CPU pointers are A + off
 * with off past sizeof(struct kernel_cpustat).
 *
 * Not a monitor: it stores freely and is never compiled by dev-compile.sh (not in
 * kernel-src/ top level).
 */
#include "ciel_cgroup.h"
#include "ciel_net.h"

#define FAKE_CPUS	2
#define FAKE_PCPU_SIZE	65536

/* ---- kernel globals the monitors reference -------------------------------------- */
struct cgroup_root cgrp_dfl_root;
struct list_head cgroup_roots;
unsigned long __per_cpu_offset[NR_CPUS];
DEFINE_PER_CPU(struct kernel_cpustat, kernel_cpustat);
unsigned int nr_cpu_ids;
struct cpumask __cpu_possible_mask;
nodemask_t node_states[NR_NODE_STATES];
unsigned int nr_node_ids;

static char pcpu_area[FAKE_CPUS][FAKE_PCPU_SIZE] __aligned(64);
static unsigned long pcpu_next = ALIGN(sizeof(struct kernel_cpustat), 64);

/* alloc_percpu(): returns a per-CPU pointer (A + off) */
static void __percpu *fake_alloc_percpu(unsigned long size)
{
	unsigned long off = pcpu_next;

	pcpu_next = ALIGN(pcpu_next + size, 64);
	return (void __percpu *)((unsigned long)&kernel_cpustat + off);
}

static void *fake_cpu(void __percpu *p, int cpu)
{
	return per_cpu_ptr(p, cpu);
}

static void link_tail(struct list_head *n, struct list_head *head)
{
	n->prev = head->prev;
	n->next = head;
	head->prev->next = n;
	head->prev = n;
}

/* ---- cgroups -------------------------------------------------------------------- */
struct fake_memcg {
	struct mem_cgroup memcg;
	struct mem_cgroup_per_node *nodeinfo0;	/* room for memcg.nodeinfo[0] */
};

static struct kernfs_node kn_v2root, kn_a, kn_b, kn_d, kn_c;
static struct cgroup cg_a, cg_b, cg_d, cg_c;
static struct fake_memcg mem_root, mem_a, mem_b, mem_d;
static struct mem_cgroup_per_node pn_root, pn_a, pn_b, pn_d;
static struct blkcg blkcg_a, blkcg_b, blkcg_d;
static struct blkcg_gq blkg_a, blkg_b, blkg_b_off;
static struct pids_cgroup pids_root, pids_a, pids_b, pids_d;

static void init_cgroup(struct cgroup *cg, struct cgroup *parent, struct kernfs_node *kn,
			struct kernfs_node *pkn, const char *name, u64 id, bool online)
{
	INIT_LIST_HEAD(&cg->self.children);
	INIT_LIST_HEAD(&cg->self.sibling);
	INIT_LIST_HEAD(&cg->cset_links);
	cg->self.cgroup = cg;
	cg->self.flags = online ? CSS_ONLINE : 0;
	cg->kn = kn;
	kn->name = name;
	kn->parent = pkn;
	kn->id = id;
	cg->rstat_cpu = fake_alloc_percpu(sizeof(struct cgroup_rstat_cpu));
	if (parent) {
		cg->self.parent = &parent->self;
		cg->level = parent->level + 1;
		link_tail(&cg->self.sibling, &parent->self.children);
	}
}

static void set_cpu_rstat(struct cgroup *cg, int cpu, u64 cur, u64 last)
{
	struct cgroup_rstat_cpu *rc = fake_cpu(cg->rstat_cpu, cpu);

	rc->bstat.cputime.sum_exec_runtime = cur;
	rc->last_bstat.cputime.sum_exec_runtime = last;
}

static void set_bstat(struct cgroup *cg, u64 bstat, u64 last)
{
	cg->bstat.cputime.sum_exec_runtime = bstat;
	cg->last_bstat.cputime.sum_exec_runtime = last;
}

static struct mem_cgroup *init_memcg(struct fake_memcg *fm, struct mem_cgroup_per_node *pn,
				     struct cgroup *cg, long usage)
{
	struct mem_cgroup *m = &fm->memcg;

	m->css.cgroup = cg;
	atomic_long_set(&m->memory.usage, usage);
	m->nodeinfo[0] = pn;	/* lands in the padding or in fm->nodeinfo0 */
	pn->lruvec_stats_percpu = fake_alloc_percpu(sizeof(struct lruvec_stats_percpu));
	cg->subsys[memory_cgrp_id] = &m->css;
	return m;
}

static void set_mem(struct mem_cgroup_per_node *pn, enum node_stat_item idx, long state,
		    long pending)
{
	pn->lruvec_stats.state[idx] = state;
	pn->lruvec_stats.state_pending[idx] = pending;
}

static void set_mem_cpu(struct mem_cgroup_per_node *pn, int cpu, enum node_stat_item idx,
			long state, long prev)
{
	struct lruvec_stats_percpu *l = fake_cpu(pn->lruvec_stats_percpu, cpu);

	l->state[idx] = state;
	l->state_prev[idx] = prev;
}

static void init_blkcg(struct blkcg *b, struct cgroup *cg)
{
	b->css.cgroup = cg;
	cg->subsys[io_cgrp_id] = &b->css;
}

static void add_blkg(struct blkcg *b, struct blkcg_gq *g, bool online)
{
	g->blkcg = b;
	g->online = online;
	g->iostat_cpu = fake_alloc_percpu(sizeof(struct blkg_iostat_set));
	g->blkcg_node.next = b->blkg_list.first;
	b->blkg_list.first = &g->blkcg_node;
}

static void set_blkg(struct blkcg_gq *g, u64 r, u64 w, u64 lr, u64 lw)
{
	g->iostat.cur.bytes[CIEL_BLKG_IOSTAT_READ] = r;
	g->iostat.cur.bytes[CIEL_BLKG_IOSTAT_WRITE] = w;
	g->iostat.last.bytes[CIEL_BLKG_IOSTAT_READ] = lr;
	g->iostat.last.bytes[CIEL_BLKG_IOSTAT_WRITE] = lw;
}

static void set_blkg_cpu(struct blkcg_gq *g, int cpu, u64 r, u64 w, u64 lr, u64 lw)
{
	struct blkg_iostat_set *s = fake_cpu(g->iostat_cpu, cpu);

	s->cur.bytes[CIEL_BLKG_IOSTAT_READ] = r;
	s->cur.bytes[CIEL_BLKG_IOSTAT_WRITE] = w;
	s->last.bytes[CIEL_BLKG_IOSTAT_READ] = lr;
	s->last.bytes[CIEL_BLKG_IOSTAT_WRITE] = lw;
}

static void init_pids(struct pids_cgroup *p, struct cgroup *cg, s64 n)
{
	p->css.cgroup = cg;
	atomic64_set(&p->counter, n);
	cg->subsys[pids_cgrp_id] = &p->css;
}

/* ---- tasks, namespaces, devices ---------------------------------------------------- */
static struct css_set cset_a, cset_b, cset_d;
static struct cgrp_cset_link link_a, link_b, link_d;
static struct task_struct task_exiting, task_a, task_d;
static struct nsproxy ns1, ns2;
static struct net net1, net2;

#define DEV_BYTES (ALIGN(sizeof(struct net_device), NETDEV_ALIGN) + sizeof(struct veth_priv))
static char lo1_mem[DEV_BYTES] __aligned(NETDEV_ALIGN);
static char eth0_mem[DEV_BYTES] __aligned(NETDEV_ALIGN);
static char peer_mem[DEV_BYTES] __aligned(NETDEV_ALIGN);
static char eth0b_mem[DEV_BYTES] __aligned(NETDEV_ALIGN);
static char veth0_mem[DEV_BYTES] __aligned(NETDEV_ALIGN);
static char br0_mem[DEV_BYTES] __aligned(NETDEV_ALIGN);
static struct veth_rq eth0_rq[2], peer_rq[1];
static struct rtnl_link_ops veth_link_ops = { .kind = "veth" };

static void link_cset(struct cgroup *cg, struct cgrp_cset_link *l, struct css_set *cs, int nr)
{
	INIT_LIST_HEAD(&cs->tasks);
	cs->nr_tasks = nr;
	l->cgrp = cg;
	l->cset = cs;
	link_tail(&l->cset_link, &cg->cset_links);
}

static struct net_device *init_dev(char *mem, struct net *net, const char *name)
{
	struct net_device *dev = (struct net_device *)mem;
	int i;

	for (i = 0; name[i]; i++)
		dev->name[i] = name[i];
	dev->lstats = fake_alloc_percpu(sizeof(struct pcpu_sw_netstats));	/* room for either */
	if (net)
		link_tail(&dev->dev_list, &net->dev_base_head);
	return dev;
}

static void set_tstats(struct net_device *dev, int cpu, u64 rxp, u64 rxb, u64 txp, u64 txb)
{
	struct pcpu_sw_netstats *t = fake_cpu(dev->tstats, cpu);

	dev->pcpu_stat_type = NETDEV_PCPU_STAT_TSTATS;
	u64_stats_set(&t->rx_packets, rxp);
	u64_stats_set(&t->rx_bytes, rxb);
	u64_stats_set(&t->tx_packets, txp);
	u64_stats_set(&t->tx_bytes, txb);
}

static void set_lstats(struct net_device *dev, int cpu, u64 packets, u64 bytes)
{
	struct pcpu_lstats *l = fake_cpu(dev->lstats, cpu);

	u64_stats_set(&l->packets, packets);
	u64_stats_set(&l->bytes, bytes);
}

/* ---- v1 ------------------------------------------------------------------------------ */
static struct {
	struct cgroup_root root;	/* cgroup_root embeds the flexible cgroup: keep it last */
} v1root;
static struct kernfs_node kn_v1root, kn_x;
static struct cgroup cg_x;
static struct cpuacct ca_root, ca_x;
static struct fake_memcg mem_v1root, mem_x;
static struct mem_cgroup_per_node pn_v1root, pn_x;
static struct blkcg blkcg_x;
static struct blkcg_gq blkg_x;
static struct cgrp_cset_link link_x;

static void init_cpuacct(struct cpuacct *ca, struct cgroup *cg, u64 c0, u64 c1)
{
	ca->css.cgroup = cg;
	ca->cpuusage = fake_alloc_percpu(sizeof(u64));
	*(u64 *)fake_cpu(ca->cpuusage, 0) = c0;
	*(u64 *)fake_cpu(ca->cpuusage, 1) = c1;
	cg->subsys[cpuacct_cgrp_id] = &ca->css;
}

void ciel_fake_guest_setup(void)
{
	struct cgroup *root = &cgrp_dfl_root.cgrp;
	struct kernel_cpustat *k0, *k1;
	struct veth_priv *vp;
	struct net_device *dev;
	int c;

	/* CPUs 0 and 1 possible, node 0 */
	nr_cpu_ids = FAKE_CPUS;
	__cpu_possible_mask.bits[0] = 3;
	nr_node_ids = 1;
	node_states[N_POSSIBLE].bits[0] = 1;
	for (c = 0; c < FAKE_CPUS; c++)
		__per_cpu_offset[c] = (unsigned long)pcpu_area[c] - (unsigned long)&kernel_cpustat;

	/* v2 root: cpu.stat from kernel_cpustat = 120 + 200 (idle not counted) */
	k0 = per_cpu_ptr(&kernel_cpustat, 0);
	k1 = per_cpu_ptr(&kernel_cpustat, 1);
	k0->cpustat[CPUTIME_USER] = 100;
	k0->cpustat[CPUTIME_NICE] = 1;
	k0->cpustat[CPUTIME_SYSTEM] = 10;
	k0->cpustat[CPUTIME_IRQ] = 2;
	k0->cpustat[CPUTIME_SOFTIRQ] = 3;
	k0->cpustat[CPUTIME_STEAL] = 4;
	k0->cpustat[CPUTIME_IDLE] = 1000;
	k1->cpustat[CPUTIME_USER] = 200;

	INIT_LIST_HEAD(&cgroup_roots);
	INIT_LIST_HEAD(&cgrp_dfl_root.root_list);
	link_tail(&cgrp_dfl_root.root_list, &cgroup_roots);
	cgrp_dfl_root.subsys_mask = (1u << memory_cgrp_id) | (1u << io_cgrp_id) | (1u << pids_cgrp_id);

	/* tree: / -> a -> b -> d, / -> c (dying) */
	init_cgroup(root, NULL, &kn_v2root, NULL, "", 1, true);
	init_cgroup(&cg_a, root, &kn_a, &kn_v2root, "a", 10, true);
	init_cgroup(&cg_b, &cg_a, &kn_b, &kn_a, "b", 11, true);
	init_cgroup(&cg_d, &cg_b, &kn_d, &kn_b, "d", 12, true);
	init_cgroup(&cg_c, root, &kn_c, &kn_v2root, "c", 13, false);
	root->nr_descendants = 4;

	/* cpu: a self 1000 + (10 + 0), contrib 10 + 100 (to root: ignored) */
	set_bstat(&cg_a, 1000, 900);
	set_cpu_rstat(&cg_a, 0, 50, 40);
	set_cpu_rstat(&cg_a, 1, 30, 30);
	/* b self 500 + 22, contrib 22 + 50 */
	set_bstat(&cg_b, 500, 450);
	set_cpu_rstat(&cg_b, 0, 20, 5);
	set_cpu_rstat(&cg_b, 1, 7, 0);
	/* d self 100 + 2, contrib 2 */
	set_bstat(&cg_d, 100, 100);
	set_cpu_rstat(&cg_d, 0, 3, 1);
	set_bstat(&cg_c, 70, 70);

	/* memory (pages), node 0 */
	init_memcg(&mem_root, &pn_root, root, 5000);
	set_mem(&pn_root, NR_ANON_MAPPED, 1000, 0);
	set_mem(&pn_root, NR_FILE_PAGES, 2000, 0);
	init_memcg(&mem_a, &pn_a, &cg_a, 300);
	set_mem(&pn_a, NR_ANON_MAPPED, 100, 5);
	set_mem(&pn_a, NR_FILE_PAGES, 200, 0);
	set_mem_cpu(&pn_a, 0, NR_ANON_MAPPED, 30, 20);
	set_mem_cpu(&pn_a, 0, NR_FILE_PAGES, 10, 10);
	init_memcg(&mem_b, &pn_b, &cg_b, 100);
	set_mem(&pn_b, NR_ANON_MAPPED, 40, 0);
	set_mem(&pn_b, NR_FILE_PAGES, 60, 0);
	set_mem_cpu(&pn_b, 1, NR_ANON_MAPPED, 7, 2);
	init_memcg(&mem_d, &pn_d, &cg_d, 7);
	set_mem(&pn_d, NR_FILE_PAGES, 0, 3);
	set_mem_cpu(&pn_d, 0, NR_FILE_PAGES, 4, 0);

	/* io: a, b, d have a blkcg; d has no blkg; b has an offline blkg (ignored) */
	init_blkcg(&blkcg_a, &cg_a);
	add_blkg(&blkcg_a, &blkg_a, true);
	set_blkg(&blkg_a, 1000, 2000, 900, 2000);
	set_blkg_cpu(&blkg_a, 0, 50, 0, 40, 0);
	init_blkcg(&blkcg_b, &cg_b);
	add_blkg(&blkcg_b, &blkg_b, true);
	set_blkg(&blkg_b, 300, 30, 300, 20);
	set_blkg_cpu(&blkg_b, 1, 0, 15, 0, 5);
	add_blkg(&blkcg_b, &blkg_b_off, false);
	set_blkg(&blkg_b_off, 1 << 30, 1 << 30, 0, 0);
	init_blkcg(&blkcg_d, &cg_d);

	/* pids */
	init_pids(&pids_root, root, 9);
	init_pids(&pids_a, &cg_a, 5);
	init_pids(&pids_b, &cg_b, 3);
	init_pids(&pids_d, &cg_d, 1);

	/* tasks: a has an exiting task (no nsproxy) then a live one; b none; d one */
	link_cset(&cg_a, &link_a, &cset_a, 2);
	link_tail(&task_exiting.cg_list, &cset_a.tasks);
	link_tail(&task_a.cg_list, &cset_a.tasks);
	task_a.nsproxy = &ns1;
	ns1.net_ns = &net1;
	link_cset(&cg_b, &link_b, &cset_b, 0);
	link_cset(&cg_d, &link_d, &cset_d, 1);
	link_tail(&task_d.cg_list, &cset_d.tasks);
	task_d.nsproxy = &ns2;
	ns2.net_ns = &net2;

	/* net1: lo, eth0 = veth (2 rx queues) whose peer (host side, no netns list) */
	INIT_LIST_HEAD(&net1.dev_base_head);
	dev = init_dev(lo1_mem, &net1, "lo");
	dev->flags = IFF_LOOPBACK;
	set_lstats(dev, 0, 5, 500);
	dev = init_dev(eth0_mem, &net1, "eth0");
	dev->rtnl_link_ops = &veth_link_ops;
	dev->num_rx_queues = 2;
	set_tstats(dev, 0, 0, 0, 10, 1000);	/* 6.1.0-56 veth: tstats, tx only */
	set_tstats(dev, 1, 0, 0, 1, 100);
	eth0_rq[0].stats.vs.xdp_packets = 2;
	eth0_rq[0].stats.vs.xdp_bytes = 200;
	eth0_rq[1].stats.vs.xdp_packets = 1;
	eth0_rq[1].stats.vs.xdp_bytes = 50;
	vp = netdev_priv(dev);
	vp->rq = eth0_rq;
	vp->peer = init_dev(peer_mem, NULL, "veth123");
	vp->peer->rtnl_link_ops = &veth_link_ops;
	vp->peer->num_rx_queues = 1;
	set_tstats(vp->peer, 1, 0, 0, 20, 3000);
	peer_rq[0].stats.vs.xdp_packets = 4;
	peer_rq[0].stats.vs.xdp_bytes = 400;
	((struct veth_priv *)netdev_priv(vp->peer))->rq = peer_rq;
	((struct veth_priv *)netdev_priv(vp->peer))->peer = dev;

	/* net2: eth0 of a driver without per-CPU stats: dev->stats */
	INIT_LIST_HEAD(&net2.dev_base_head);
	dev = init_dev(eth0b_mem, &net2, "eth0");
	dev->stats.rx_bytes = 77;
	dev->stats.tx_bytes = 88;
	dev->stats.rx_packets = 7;
	dev->stats.tx_packets = 8;
	/* net2: veth0, a veth of the pre-backport kind (own lstats, pcpu_stat_type NONE), no peer */
	dev = init_dev(veth0_mem, &net2, "veth0");
	dev->rtnl_link_ops = &veth_link_ops;
	set_lstats(dev, 0, 3, 300);
	/* net2: br0, a generic driver with core-managed tstats on top of dev->stats */
	dev = init_dev(br0_mem, &net2, "br0");
	dev->stats.rx_bytes = 1;
	set_tstats(dev, 1, 2, 20, 4, 40);

	/* v1 hierarchy 3 with cpuacct, memory, blkio: / -> x */
	INIT_LIST_HEAD(&v1root.root.root_list);
	link_tail(&v1root.root.root_list, &cgroup_roots);
	v1root.root.hierarchy_id = 3;
	v1root.root.subsys_mask = (1u << cpuacct_cgrp_id) | (1u << memory_cgrp_id) | (1u << io_cgrp_id);
	init_cgroup(&v1root.root.cgrp, NULL, &kn_v1root, NULL, "", 1, true);
	init_cgroup(&cg_x, &v1root.root.cgrp, &kn_x, &kn_v1root, "x", 20, true);
	init_cpuacct(&ca_root, &v1root.root.cgrp, 100, 200);
	init_cpuacct(&ca_x, &cg_x, 40, 0);
	init_memcg(&mem_v1root, &pn_v1root, &v1root.root.cgrp, 999);
	set_mem(&pn_v1root, NR_ANON_MAPPED, 10, 0);
	set_mem(&pn_v1root, NR_FILE_PAGES, 20, 0);
	init_memcg(&mem_x, &pn_x, &cg_x, 50);
	set_mem_cpu(&pn_x, 0, NR_ANON_MAPPED, 6, 6);
	set_mem_cpu(&pn_x, 1, NR_ANON_MAPPED, 4, 0);
	set_mem_cpu(&pn_x, 0, NR_FILE_PAGES, 8, 8);
	init_blkcg(&blkcg_x, &cg_x);
	add_blkg(&blkcg_x, &blkg_x, true);
	set_blkg(&blkg_x, 7777, 7777, 0, 0);		/* global value: not v1 semantics */
	set_blkg_cpu(&blkg_x, 0, 500, 0, 500, 0);
	set_blkg_cpu(&blkg_x, 1, 12, 64, 0, 0);
	/* x shares css_set cset_a with v2's /a (a css_set links one cgroup per hierarchy) */
	link_x.cgrp = &cg_x;
	link_x.cset = &cset_a;
	link_tail(&link_x.cset_link, &cg_x.cset_links);
}

/*
 * Names the Docker engine gives its containers' cgroups (CIEL_ARG_CONTAINERS_ONLY):
 * 1 = systemd driver, b becomes /a/docker-<id>.scope and x /docker-<id>.scope;
 * 2 = cgroupfs driver, a becomes /docker and b /docker/<id>;
 * 3 = near misses (b "docker-<63 hex>g.scope", x "<64 hex>" below the root): no container;
 * 0 = the names of the tree above.
 */
#define CIEL_FAKE_ID "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
void ciel_fake_guest_docker_names(int how)
{
	kn_a.name = how == 2 ? "docker" : "a";
	kn_b.name = how == 1 ? "docker-" CIEL_FAKE_ID ".scope" : how == 2 ? CIEL_FAKE_ID :
		    how == 3 ? "docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg.scope" : "b";
	kn_x.name = how == 1 ? "docker-" CIEL_FAKE_ID ".scope" : how == 3 ? CIEL_FAKE_ID : "x";
}

/*
 * Hostile guest memory: cycles that never return to the list head. The monitors must
 * stop at their bounds (args.max_cgroups, CIEL_MAX_LIST, CIEL_MAX_TASKS_TRIED) and say so.
 */
void ciel_fake_guest_make_cycles(void)
{
	/* d's sibling link points back at d: an endless run of "next siblings" */
	cg_d.self.sibling.next = &cg_d.self.sibling;
	/* b's cset_links: the link points at itself, never back to the head */
	link_b.cset_link.next = &link_b.cset_link;
	/* net2's device list loops on its first device (eth0, which is not "nosuch") */
	((struct net_device *)eth0b_mem)->dev_list.next = &((struct net_device *)eth0b_mem)->dev_list;
}
