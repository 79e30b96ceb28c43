// SPDX-License-Identifier: MIT
/*
 * layout.c - the struct layouts the monitors rely on, declared for the build: one
 * CIEL_LAYOUT(struct tag, field, subfield...) per field listed in ciel_fields.h and one
 * CIEL_SIZEOF per size the code depends on (array strides, container_of, netdev_priv).
 * ciel_layout.h (build side) turns each into a constant global with the offset/size the
 * compiler computed from the guest's headers (and ciel_private.h for private structs);
 * `ciel build` compares them with the guest kernel's BTF.
 * Without ciel_layout.h this file compiles to an empty module.
 */
#include "ciel_cgroup.h"
#include "ciel_net.h"
#include "ciel_fields.h"

#if __has_include("ciel_layout.h")
#include "ciel_layout.h"

#define CIEL_FIELD_LAYOUT(s, ...) CIEL_LAYOUT(s, __VA_ARGS__);
#define CIEL_SIZE_LAYOUT(s) CIEL_SIZEOF(s);
CIEL_FIELDS(CIEL_FIELD_LAYOUT)
CIEL_SIZES(CIEL_SIZE_LAYOUT)

/* veth structs live in veth.ko: only declared when the checker also loads module BTF
 * (veth.ko's split BTF); test/kernel-src/layout.test.ts checks them either way. */
#ifdef CIEL_LAYOUT_MODULE_BTF
CIEL_FIELDS_VETH(CIEL_FIELD_LAYOUT)
CIEL_SIZES_VETH(CIEL_SIZE_LAYOUT)
#endif
#endif
