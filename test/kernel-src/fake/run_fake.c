// SPDX-License-Identifier: MIT
/*
 * run_fake.c - host-side driver (plain libc C) for fake_guest.c: runs the monitors on
 * the fake guest in a few scenarios and prints the header and records as JSON lines,
 * one object per scenario. Used by test/kernel-src/monitor.test.ts.
 */
#include <stdio.h>
#include <string.h>
#include "ciel_abi.h"

long ciel_mon_cgroup_v2(void *out, unsigned long out_len, const void *in, unsigned long in_len);
long ciel_mon_cgroup_v1(void *out, unsigned long out_len, const void *in, unsigned long in_len);
void ciel_fake_guest_setup(void);
void ciel_fake_guest_make_cycles(void);
void ciel_fake_guest_docker_names(int how);

static union { struct ciel_mon_hdr hdr; char bytes[64 + 64 * sizeof(struct ciel_cgroup_rec)]; } buf;

static void dump(const char *name, long ret)
{
	const struct ciel_mon_hdr *h = &buf.hdr;
	const struct ciel_cgroup_rec *r = (const void *)(h + 1);
	unsigned int i;

	printf("{\"scenario\":\"%s\",\"ret\":%ld", name, ret);
	if (ret >= 0) {
		printf(",\"hdr\":{\"magic\":%u,\"abi_version\":%u,\"hdr_size\":%u,\"rec_size\":%u,"
		       "\"nr_records\":%u,\"nr_seen\":%u,\"flags\":%u,\"cgroup_mode\":%u,"
		       "\"nr_v1_roots\":%u,\"nr_cpus\":%u,\"nr_cpu_ids\":%u,\"dfl_subsys_mask\":%u,"
		       "\"nr_nodes\":%u,\"v1_subsys_mask\":%u,\"dfl_nr_descendants\":%u},\"recs\":[",
		       h->magic, h->abi_version, h->hdr_size, h->rec_size, h->nr_records, h->nr_seen,
		       h->flags, h->cgroup_mode, h->nr_v1_roots, h->nr_cpus, h->nr_cpu_ids,
		       h->dfl_subsys_mask, h->nr_nodes, h->v1_subsys_mask, h->dfl_nr_descendants);
		for (i = 0; i < h->nr_records; i++, r++)
			printf("%s{\"path\":\"%s\",\"cpu\":%llu,\"mem\":%llu,\"rss\":%llu,\"cache\":%llu,"
			       "\"io_r\":%llu,\"io_w\":%llu,\"rx_b\":%llu,\"tx_b\":%llu,\"rx_p\":%llu,"
			       "\"tx_p\":%llu,\"pids\":%u,\"tasks\":%u,\"id\":%llu,\"level\":%u,"
			       "\"flags\":%u,\"hier\":%u,\"parent\":%u,\"task\":%s,\"mask\":%u}",
			       i ? "," : "", r->path, r->cpu_usage_ns, r->memory_usage_bytes,
			       r->memory_rss_bytes, r->memory_cache_bytes, r->io_read_bytes,
			       r->io_write_bytes, r->net_rx_bytes, r->net_tx_bytes, r->net_rx_packets,
			       r->net_tx_packets, r->pids, r->nr_tasks, r->cgroup_id, r->level, r->flags,
			       r->hierarchy_id, r->parent_index, r->first_task ? "true" : "false",
			       r->subsys_mask);
		printf("]");
	}
	printf("}\n");
}

int main(void)
{
	struct ciel_mon_args a;

	ciel_fake_guest_setup();

	memset(&buf, 0xa5, sizeof(buf));
	dump("v2", ciel_mon_cgroup_v2(&buf, sizeof(buf), NULL, 0));

	memset(&a, 0, sizeof(a));
	a.flags = CIEL_ARG_INCLUDE_DYING;
	memset(&buf, 0xa5, sizeof(buf));
	dump("v2_dying", ciel_mon_cgroup_v2(&buf, sizeof(buf), &a, sizeof(a)));

	memset(&a, 0, sizeof(a));
	a.max_cgroups = 3;
	a.flags = CIEL_ARG_NO_NET;
	dump("v2_limit", ciel_mon_cgroup_v2(&buf, sizeof(buf), &a, sizeof(a)));

	memset(&a, 0, sizeof(a));
	a.max_depth = 2;
	dump("v2_depth", ciel_mon_cgroup_v2(&buf, sizeof(buf), &a, sizeof(a)));

	dump("v2_small", ciel_mon_cgroup_v2(&buf, sizeof(struct ciel_mon_hdr) + 2 * sizeof(struct ciel_cgroup_rec), NULL, 0));
	dump("v2_tiny", ciel_mon_cgroup_v2(&buf, sizeof(struct ciel_mon_hdr) - 1, NULL, 0));
	dump("v2_badin", ciel_mon_cgroup_v2(&buf, sizeof(buf), NULL, 8));

	memset(&a, 0, sizeof(a));
	strcpy(a.ifname, "lo");
	dump("v2_lo", ciel_mon_cgroup_v2(&buf, sizeof(buf), &a, 32));

	memset(&a, 0, sizeof(a));
	strcpy(a.ifname, "veth0");
	dump("v2_veth0", ciel_mon_cgroup_v2(&buf, sizeof(buf), &a, 32));
	strcpy(a.ifname, "br0");
	dump("v2_br0", ciel_mon_cgroup_v2(&buf, sizeof(buf), &a, 32));

	memset(&buf, 0xa5, sizeof(buf));
	dump("v1", ciel_mon_cgroup_v1(&buf, sizeof(buf), NULL, 0));
	memset(&a, 0, sizeof(a));
	a.hierarchy_id = 7;
	dump("v1_other", ciel_mon_cgroup_v1(&buf, sizeof(buf), &a, sizeof(a)));

	/* statistics only where asked for: the root and Docker's containers (and below them) */
	for (int how = 0; how <= 3; how++) {
		static const char *const names[] = { "plain", "systemd", "cgroupfs", "nearmiss" };
		char v2[32], v1[32];

		snprintf(v2, sizeof(v2), "v2_only_%s", names[how]);
		snprintf(v1, sizeof(v1), "v1_only_%s", names[how]);
		ciel_fake_guest_docker_names(how);
		memset(&a, 0, sizeof(a));
		a.flags = CIEL_ARG_CONTAINERS_ONLY;
		memset(&buf, 0xa5, sizeof(buf));
		dump(v2, ciel_mon_cgroup_v2(&buf, sizeof(buf), &a, sizeof(a)));
		memset(&buf, 0xa5, sizeof(buf));
		dump(v1, ciel_mon_cgroup_v1(&buf, sizeof(buf), &a, sizeof(a)));
	}
	ciel_fake_guest_docker_names(0);

	ciel_fake_guest_make_cycles();
	memset(&a, 0, sizeof(a));
	a.max_cgroups = 50;
	strcpy(a.ifname, "nosuch");
	dump("v2_cycles", ciel_mon_cgroup_v2(&buf, sizeof(buf), &a, sizeof(a)));
	return 0;
}
