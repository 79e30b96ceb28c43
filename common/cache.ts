import { mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

/**
 * Where downloaded kernel packages, built guest images and compiled runtime objects are kept.
 * Outside the checkout on purpose: a fresh clone (as CI makes) on the same machine reuses it.
 * Override with CIEL_CACHE.
 */
export function cacheDir(...sub: string[]): string {
  const base = process.env.CIEL_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'ciel');
  const dir = join(base, ...sub);
  mkdirSync(dir, { recursive: true });
  return dir;
}
