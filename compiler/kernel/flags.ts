// The clang-14 command line that compiles monitor C code against a guest kernel's own headers
// into userspace-linkable LLVM IR (measured set, see DESIGN.md "Compiling kernel code for userspace").

import { existsSync } from 'node:fs';
import { execaSync } from 'execa';
import { ToolError } from '../../common/errors.ts';
import type { HeaderTree } from './packages.ts';

export const CLANG = 'clang-14';

/** per PATH, so a changed PATH is looked at again */
const builtinInclude = new Map<string, string>();

/** clang-14's own include dir (stddef.h, stdarg.h, ...); checks that clang-14 is installed. */
export function clangBuiltinInclude(): string {
  const key = process.env.PATH ?? '';
  const hit = builtinInclude.get(key);
  if (hit) return hit;
  let out: string;
  try {
    out = execaSync(CLANG, ['-print-file-name=include']).stdout.trim();
  } catch (e) {
    const err = e as { code?: string; message: string };
    const missing = err.code === 'ENOENT' || /ENOENT/.test(err.message);
    throw new ToolError(
      CLANG,
      missing ? 'not found; install it with: apt-get install -y clang-14 llvm-14' : `failed: ${err.message}`,
    );
  }
  if (!out || out === 'include') throw new ToolError(CLANG, 'cannot find its builtin include directory (clang-14 -print-file-name=include)');
  builtinInclude.set(key, out);
  return out;
}

export interface FlagOptions {
  /** what clang should emit: `bc` = -emit-llvm -c (default), `ll` = -S -emit-llvm, `none` = no mode flags */
  emit?: 'bc' | 'll' | 'none';
}

/**
 * Flags for `clang-14 <flags> file.c -o out`. `shimDirs` come first on the include path so
 * shims can override kernel headers (static keys, asm helpers). K = commonDir, O = archDir.
 */
export function kernelClangFlags(tree: Pick<HeaderTree, 'commonDir' | 'archDir'> & { line?: HeaderTree['line'] }, shimDirs: string[], opts: FlagOptions = {}): string[] {
  const K = tree.commonDir;
  const O = tree.archDir;
  const flags = [
    '-nostdinc',
    '-isystem',
    clangBuiltinInclude(),
    ...shimDirs.map((d) => `-I${d}`),
    `-I${K}/arch/x86/include`,
    `-I${O}/arch/x86/include/generated`,
    `-I${K}/include`,
    `-I${O}/include`,
    `-I${K}/arch/x86/include/uapi`,
    `-I${O}/arch/x86/include/generated/uapi`,
    `-I${K}/include/uapi`,
    `-I${O}/include/generated/uapi`,
    // compiler-version.h appeared in 5.12 (5.10 headers lack it)
    ...(existsSync(`${K}/include/linux/compiler-version.h`) ? ['-include', `${K}/include/linux/compiler-version.h`] : []),
    '-include',
    `${K}/include/linux/kconfig.h`,
    '-include',
    `${K}/include/linux/compiler_types.h`,
    '-D__KERNEL__',
    '-DKBUILD_MODNAME="ciel"',
    '--target=x86_64-linux-gnu',
    '-std=gnu11',
    // -O2 must stay: __OPTIMIZE__ gates the kernel's compile-time asserts
    '-O2',
    '-fno-strict-aliasing',
    '-fno-common',
    '-fshort-wchar',
    '-fno-delete-null-pointer-checks',
    '-fno-strict-overflow',
    // -fPIC must stay: it turns RIP_REL_REF into a plain access
    '-fPIC',
    '-fno-stack-protector',
    '-fno-builtin',
    '-fno-jump-tables',
    '-fno-asynchronous-unwind-tables',
    '-mno-sse',
    '-mno-mmx',
    '-mno-sse2',
    '-mno-3dnow',
    '-mno-avx',
    // no masked loads / gathers for the g_map pass to miss
    '-fno-vectorize',
    '-fno-slp-vectorize',
    '-g0',
    ...lineFlags(tree.line),
  ];
  const emit = opts.emit ?? 'bc';
  if (emit === 'bc') flags.push('-emit-llvm', '-c');
  else if (emit === 'll') flags.push('-S', '-emit-llvm');
  return flags;
}

/**
 * Flags one kernel line's headers need from clang-14. 7.x headers use anonymous struct members of
 * a tagged type (Microsoft extension; the kernel's Makefile passes -fms-extensions since 6.19) and
 * state LLVM >= 15; with CC_USING_FENTRY their ftrace header takes the path clang-14 can compile.
 */
export function lineFlags(line: HeaderTree['line']): string[] {
  if (line === '7.x') return ['-fms-extensions', '-DCC_USING_FENTRY', '-Wno-microsoft-anon-tag'];
  return [];
}
