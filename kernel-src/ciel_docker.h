/* SPDX-License-Identifier: MIT */
/*
 * ciel_docker.h - is this cgroup one the Docker engine made for a container? From its kernfs
 * name alone (and its parent's), so a walk can tell containers apart without building paths:
 *   systemd driver:  docker-<64 lowercase hex>.scope     (/system.slice/docker-<id>.scope)
 *   cgroupfs driver: <64 lowercase hex> below "docker"   (/docker/<id>)
 * with ".scope" optional in both. This is exactly what the runtime's dockerIdOf()
 * (vmi/guest-monitor.ts, /(^|\/)docker[-/]([0-9a-f]{64})(\.scope)?$/) accepts on the path:
 * names never contain '/', so a "docker" component is a whole kernfs name.
 * Guest strings are read byte by byte and never past their first unexpected byte.
 */
#ifndef CIEL_DOCKER_H
#define CIEL_DOCKER_H

#include "ciel_cgroup.h"

#define CIEL_DOCKER_ID_LEN	64

/* 64 lowercase hex digits at s (guest), then the end of the name or ".scope". */
static __always_inline bool ciel_docker_id_name(const char *s)
{
	int i;

	for (i = 0; i < CIEL_DOCKER_ID_LEN; i++) {
		char c = READ_ONCE(s[i]);

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
	}
	return !READ_ONCE(s[CIEL_DOCKER_ID_LEN]) ||
	       !ciel_strncmp(s + CIEL_DOCKER_ID_LEN, ".scope", sizeof(".scope"));
}

/* in: the cgroup's kernfs node (guest, may be NULL); out: true for a Docker container's cgroup. */
static __always_inline bool ciel_docker_cgroup(struct kernfs_node *kn)
{
	struct kernfs_node *parent;
	const char *name, *pname;

	if (!kn || !(name = READ_ONCE(kn->name)))
		return false;
	/* "docker-" prefix: the comparison stops at the first differing byte */
	if (!ciel_strncmp(name, "docker-", sizeof("docker-") - 1))
		return ciel_docker_id_name(name + sizeof("docker-") - 1);
	if (!ciel_docker_id_name(name))
		return false;
	parent = ciel_kernfs_parent(kn);
	return parent && (pname = READ_ONCE(parent->name)) &&
	       !ciel_strncmp(pname, "docker", sizeof("docker"));
}

#endif /* CIEL_DOCKER_H */
