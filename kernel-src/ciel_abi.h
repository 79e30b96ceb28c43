/* SPDX-License-Identifier: MIT */
/*
 * ciel_abi.h - the records Ciel's monitors fill, shared by the monitor (compiled in
 * guest-kernel context with the guest's headers) and the host side (plain C / koffi).
 *
 * Rules: only our own fixed-width typedefs (no kernel types), explicit padding, every
 * size and offset pinned with _Static_assert so both compilations agree.
 *
 * Output buffer layout of every ciel_mon_cgroup_* entry point:
 *   [struct ciel_mon_hdr][struct ciel_cgroup_rec] * hdr.nr_records
 * Records start at offset hdr.hdr_size and are hdr.rec_size apart.
 * Entry point return value: number of records written (>= 0), or -errno:
 *   -ENOSPC (-28) out_len < sizeof(struct ciel_mon_hdr)
 *   -EINVAL (-22) malformed input (in_len > 0 but in == NULL)
 * A full out buffer is not an error: hdr.flags gets CIEL_HDR_TRUNC_OUT.
 */
#ifndef CIEL_ABI_H
#define CIEL_ABI_H

typedef unsigned long long ciel_u64;
typedef long long ciel_s64;
typedef unsigned int ciel_u32;
typedef unsigned short ciel_u16;
typedef unsigned char ciel_u8;

#define CIEL_ABI_MAGIC		0x4c454943u	/* "CIEL" little endian */
#define CIEL_ABI_VERSION	2u	/* 2: rec.memory_inactive_file_pages (was reserved) */
#define CIEL_PATH_MAX		256u
#define CIEL_IFNAME_MAX		16u
#define CIEL_NO_PARENT		0xffffffffu

/* ciel_mon_hdr.cgroup_mode: what the guest kernel has set up */
#define CIEL_CGMODE_NONE	0u	/* no controller bound anywhere */
#define CIEL_CGMODE_UNIFIED	1u	/* no controller on a v1 hierarchy (all on v2) */
#define CIEL_CGMODE_HYBRID	2u	/* controllers on v1 hierarchies, cgroups created on v2 too */
#define CIEL_CGMODE_LEGACY	3u	/* controllers on v1 hierarchies, v2 holds only its root */

/* ciel_mon_hdr.flags */
#define CIEL_HDR_TRUNC_OUT	(1u << 0)	/* out buffer full: more cgroups than records */
#define CIEL_HDR_TRUNC_LIMIT	(1u << 1)	/* stopped at args.max_cgroups (or list budget) */
#define CIEL_HDR_TRUNC_CPUS	(1u << 2)	/* more possible CPUs than CIEL_MAX_CPUS */
#define CIEL_HDR_TRUNC_DEPTH	(1u << 3)	/* some subtree deeper than args.max_depth */
#define CIEL_HDR_TRUNC_NODES	(1u << 4)	/* more NUMA nodes than CIEL_MAX_NODES */
#define CIEL_HDR_TRUNC_LIST	(1u << 5)	/* some inner list (csets, blkgs, devices) hit its bound */

struct ciel_mon_hdr {
	ciel_u32 magic;			/* CIEL_ABI_MAGIC */
	ciel_u16 abi_version;		/* CIEL_ABI_VERSION */
	ciel_u16 hdr_size;		/* sizeof(struct ciel_mon_hdr) */
	ciel_u32 rec_size;		/* sizeof(struct ciel_cgroup_rec) */
	ciel_u32 nr_records;		/* records written after the header */
	ciel_u32 nr_seen;		/* cgroups visited (incl. not written) */
	ciel_u32 flags;			/* CIEL_HDR_* */
	ciel_u32 cgroup_mode;		/* CIEL_CGMODE_* */
	ciel_u32 nr_v1_roots;		/* v1 hierarchies on the guest's cgroup_roots list */
	ciel_u32 nr_cpus;		/* possible CPUs summed over */
	ciel_u32 nr_cpu_ids;		/* guest nr_cpu_ids as read */
	ciel_u32 dfl_subsys_mask;	/* cgrp_dfl_root.subsys_mask (bit = enum cgroup_subsys_id) */
	ciel_u32 nr_nodes;		/* possible NUMA nodes summed over */
	ciel_u32 v1_subsys_mask;	/* OR of the v1 hierarchies' subsys_mask */
	ciel_u32 dfl_nr_descendants;	/* cgrp_dfl_root.cgrp.nr_descendants */
	ciel_u64 reserved;
};

/* ciel_cgroup_rec.flags: which numbers are valid, and how they were obtained */
#define CIEL_REC_CPU		(1u << 0)
#define CIEL_REC_MEM		(1u << 1)
#define CIEL_REC_IO		(1u << 2)
#define CIEL_REC_PIDS		(1u << 3)
#define CIEL_REC_NET		(1u << 4)
#define CIEL_REC_TASK		(1u << 5)	/* first_task found */
#define CIEL_REC_ROOT		(1u << 6)	/* hierarchy root */
#define CIEL_REC_DYING		(1u << 7)	/* css not CSS_ONLINE (rmdir'ed, not yet freed) */
#define CIEL_REC_PATH_TRUNC	(1u << 8)
#define CIEL_REC_NET_VETH	(1u << 9)	/* veth: lstats + per-queue XDP stats, both ends */
#define CIEL_REC_NET_LOOPBACK	(1u << 10)	/* loopback: per-CPU lstats */
#define CIEL_REC_NET_GENERIC	(1u << 11)	/* other driver: dev->stats only (may be 0) */
#define CIEL_REC_NET_NODEV	(1u << 12)	/* task found, no device with that name */
#define CIEL_REC_V1		(1u << 13)	/* from a v1 hierarchy (v1 file semantics) */
#define CIEL_REC_CPU_KCPUSTAT	(1u << 14)	/* v2 root: summed kernel_cpustat like cpu.stat */
#define CIEL_REC_DEPTH_TRUNC	(1u << 15)	/* children not walked (max_depth) */
#define CIEL_REC_NOT_ASKED	(1u << 16)	/* CIEL_ARG_CONTAINERS_ONLY: walked for its name and id,
						 * its statistics not read (all 0) */

struct ciel_cgroup_rec {
	ciel_u64 cpu_usage_ns;		/*   0 */
	ciel_u64 memory_usage_bytes;	/*   8 */
	ciel_u64 memory_rss_bytes;	/*  16 */
	ciel_u64 memory_cache_bytes;	/*  24 */
	ciel_u64 io_read_bytes;		/*  32 */
	ciel_u64 io_write_bytes;	/*  40 */
	ciel_u64 net_rx_bytes;		/*  48 */
	ciel_u64 net_tx_bytes;		/*  56 */
	ciel_u64 net_rx_packets;	/*  64 */
	ciel_u64 net_tx_packets;	/*  72 */
	ciel_u32 pids;			/*  80 pids controller counter */
	ciel_u32 nr_tasks;		/*  84 tasks directly in this cgroup */
	ciel_u64 cgroup_id;		/*  88 kernfs id (v2: what name_to_handle_at gives) */
	ciel_u32 level;			/*  96 depth below the hierarchy root */
	ciel_u32 flags;			/* 100 CIEL_REC_* */
	ciel_u32 hierarchy_id;		/* 104 0 = v2 default hierarchy */
	ciel_u32 parent_index;		/* 108 record index of parent, CIEL_NO_PARENT if none */
	ciel_u64 first_task;		/* 112 guest address of the task_struct used for net */
	ciel_u32 subsys_mask;		/* 120 controllers with a css on this cgroup */
	ciel_u32 memory_inactive_file_pages; /* 124 memory.stat inactive_file (v2) / total_inactive_file
					 * (v1), hierarchical, in 4 KiB pages; saturates at 0xffffffff
					 * (16 TiB). working set = usage - this * 4096 */
	char path[CIEL_PATH_MAX];	/* 128 NUL-terminated, "/" for the root */
};

/* Optional input (in/in_len); in_len 0 or shorter than the struct = defaults for the rest. */
#define CIEL_ARG_NO_NET		(1u << 0)	/* skip the netns/device lookup */
#define CIEL_ARG_INCLUDE_DYING	(1u << 1)	/* also emit records for dying cgroups */
/* Full statistics only for the hierarchy root, the cgroups Docker made (docker-<64 hex>.scope,
 * docker/<64 hex>) and what lies below them; every other cgroup is walked for its name and id
 * (CIEL_REC_NOT_ASKED) and gives only the pending memory deltas the root's hierarchical numbers
 * need, so the numbers read are the same as without the flag. */
#define CIEL_ARG_CONTAINERS_ONLY	(1u << 2)

struct ciel_mon_args {
	ciel_u32 max_cgroups;		/* per call; 0 = 4096 */
	ciel_u32 max_depth;		/* 0 = 32, capped at 64 */
	ciel_u32 flags;			/* CIEL_ARG_* */
	ciel_u32 hierarchy_id;		/* v1 only: 0 = every v1 hierarchy, else that one */
	char ifname[CIEL_IFNAME_MAX];	/* "" = "eth0" */
};

#define CIEL_ABI_ASSERT_OFF(t, f, o) \
	_Static_assert(__builtin_offsetof(t, f) == (o), #t "." #f " offset")

_Static_assert(sizeof(struct ciel_mon_hdr) == 64, "ciel_mon_hdr size");
_Static_assert(sizeof(struct ciel_cgroup_rec) == 384, "ciel_cgroup_rec size");
_Static_assert(sizeof(struct ciel_mon_args) == 32, "ciel_mon_args size");
CIEL_ABI_ASSERT_OFF(struct ciel_mon_hdr, nr_records, 12);
CIEL_ABI_ASSERT_OFF(struct ciel_mon_hdr, nr_nodes, 44);
CIEL_ABI_ASSERT_OFF(struct ciel_mon_hdr, v1_subsys_mask, 48);
CIEL_ABI_ASSERT_OFF(struct ciel_mon_hdr, reserved, 56);
CIEL_ABI_ASSERT_OFF(struct ciel_cgroup_rec, pids, 80);
CIEL_ABI_ASSERT_OFF(struct ciel_cgroup_rec, cgroup_id, 88);
CIEL_ABI_ASSERT_OFF(struct ciel_cgroup_rec, first_task, 112);
CIEL_ABI_ASSERT_OFF(struct ciel_cgroup_rec, memory_inactive_file_pages, 124);
CIEL_ABI_ASSERT_OFF(struct ciel_cgroup_rec, path, 128);
CIEL_ABI_ASSERT_OFF(struct ciel_mon_args, ifname, 16);

#endif /* CIEL_ABI_H */
