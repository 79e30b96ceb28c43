// Locating and running the external tools the build needs, with clear errors when one is missing.
import { execa } from 'execa';
import { existsSync } from 'node:fs';
import { ToolError } from '../common/errors.ts';

const CLANG_CANDIDATES = [process.env.CIEL_CLANG, '/usr/bin/clang-14', '/usr/lib/llvm-14/bin/clang'].filter(
  (p): p is string => !!p,
);

export function clangPath(): string {
  const p = CLANG_CANDIDATES.find((c) => existsSync(c));
  if (!p) throw new ToolError('clang-14', `not found (tried ${CLANG_CANDIDATES.join(', ')}); install it: apt-get install clang-14`);
  return p;
}

/** Run clang-14; on failure the error carries clang's own diagnostics. */
export async function clang(args: string[], what: string): Promise<void> {
  const r = await execa(clangPath(), args, { reject: false, all: true });
  if (r.exitCode !== 0) throw new ToolError('clang-14', `failed on ${what}:\n${(r.all ?? '').slice(0, 8000)}`);
}
