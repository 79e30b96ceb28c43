/* SPDX-License-Identifier: MIT */
/*
 * shim/asm/jump_label.h - replaces arch/x86/include/asm/jump_label.h (Linux 6.1) for
 * monitor code: static keys become a load of key->enabled instead of `asm goto` with a
 * __jump_table entry (code patched at run time in the guest, meaningless outside it).
 * kernel-src/shim comes first on the include path, so <asm/jump_label.h> from
 * <linux/jump_label.h> (included after struct static_key is defined) lands here.
 *
 * Semantics (include/linux/jump_label.h, 6.1): arch_static_branch(key, branch) and
 * arch_static_branch_jump(key, branch) return "the patched jump is taken", which for
 * every combination static_branch_{likely,unlikely} x static_key_{true,false} works out
 * as (key enabled) != branch; "enabled" is static_key_count(key) > 0.
 */
#ifndef _ASM_X86_JUMP_LABEL_H
#define _ASM_X86_JUMP_LABEL_H

#define HAVE_JUMP_LABEL_BATCH

#ifndef __ASSEMBLY__

#include <linux/types.h>

static __always_inline bool ciel_static_key_enabled(struct static_key *key)
{
	/* volatile: the key may change between two reads in the guest */
	return *(const volatile int *)&key->enabled.counter > 0;
}

static __always_inline bool arch_static_branch(struct static_key * const key, const bool branch)
{
	return ciel_static_key_enabled(key) != branch;
}

static __always_inline bool arch_static_branch_jump(struct static_key * const key, const bool branch)
{
	return ciel_static_key_enabled(key) != branch;
}

extern int arch_jump_entry_size(struct jump_entry *entry);

#endif /* __ASSEMBLY__ */

#endif /* _ASM_X86_JUMP_LABEL_H */
