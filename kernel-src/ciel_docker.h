/* SPDX-License-Identifier: MIT */
/*
 * ciel_docker.h - is this cgroup one the Docker engine made for a container? From its kernfs
 * name alone (and its parent's), so a walk can tell containers apart without building paths:
 *   systemd driver:  docker-<64 lowercase hex>.scope     (/system.slice/docker-<id>.scope)
 *   cgroupfs driver: <64 lowercase hex> below "docker"   (/docker/<id>)
 * with ".scope" optional in both. This is exactly what the runtime's dockerIdOf()
 * (vmi/guest-monitor.ts, /(^|\/)docker[-/]([0-9a-f]{64})(\.scope)?$/) accepts on the path:
 * names never contain '/', so a "docker" component is a whole kernfs name.
 * The names are copied (ciel_strscpy, bounded) and compared locally.
 */
#ifndef CIEL_DOCKER_H
#define CIEL_DOCKER_H

#include "ciel_cgroup.h"

#define CIEL_DOCKER_ID_LEN	64
/* "docker-" + 64 hex + ".scope" + NUL fits; a longer name is no container */
#define CIEL_DOCKER_NAME_MAX	(7 + CIEL_DOCKER_ID_LEN + 6 + 1 + 1)

/* 64 lowercase hex digits at s (local copy), then the end of the name or ".scope". */
static __always_inline bool ciel_docker_id_name(const char *s)
{
	int i;

	for (i = 0; i < CIEL_DOCKER_ID_LEN; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	s += CIEL_DOCKER_ID_LEN;
	return !s[0] || (s[0] == '.' && s[1] == 's' && s[2] == 'c' && s[3] == 'o' && s[4] == 'p' &&
			 s[5] == 'e' && !s[6]);
}

/* in: the cgroup's kernfs node (guest, may be NULL); out: true for a Docker container's cgroup. */
static __always_inline bool ciel_docker_cgroup(struct kernfs_node *kn)
{
	char name[CIEL_DOCKER_NAME_MAX], pname[8];
	struct kernfs_node *parent;
	const char *gname;
	bool trunc = false;

	if (!kn || !(gname = READ_ONCE(kn->name)))
		return false;
	ciel_strscpy(name, gname, sizeof(name), &trunc);
	if (trunc)
		return false;
	if (name[0] == 'd' && name[1] == 'o' && name[2] == 'c' && name[3] == 'k' && name[4] == 'e' &&
	    name[5] == 'r' && name[6] == '-')
		return ciel_docker_id_name(name + 7);
	if (!ciel_docker_id_name(name))
		return false;
	parent = ciel_kernfs_parent(kn);
	if (!parent || !(gname = READ_ONCE(parent->name)))
		return false;
	ciel_strscpy(pname, gname, sizeof(pname), &trunc);
	return !trunc && pname[0] == 'd' && pname[1] == 'o' && pname[2] == 'c' && pname[3] == 'k' &&
	       pname[4] == 'e' && pname[5] == 'r' && !pname[6];
}

#endif /* CIEL_DOCKER_H */
