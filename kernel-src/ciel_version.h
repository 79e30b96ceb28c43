/* SPDX-License-Identifier: MIT */
/*
 * ciel_version.h - one body of monitor code for every Debian kernel line (5.10, 6.1,
 * 6.12, 7.x). Where a structure the monitors read changed, the code says so next to
 * the difference with CIEL_SINCE(major, minor) and the kernel version / commit that
 * changed it, the way drgn's helpers do. LINUX_VERSION_CODE comes from the guest's own
 * generated headers; every field used is still checked against that kernel's BTF.
 */
#ifndef CIEL_VERSION_H
#define CIEL_VERSION_H

#include <linux/version.h>

#define CIEL_SINCE(major, minor) (LINUX_VERSION_CODE >= KERNEL_VERSION(major, minor, 0))

#endif /* CIEL_VERSION_H */
