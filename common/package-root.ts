// The folder that holds Ciel's package.json: the checkout when run from source (tsx), the installed
// package when run as compiled JS from dist/. Non-code assets (kernel-src/, vmi/native/*.c, generated/)
// are found from here, so both layouts resolve them the same way.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'ciel') return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`no Ciel package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

export const PACKAGE_ROOT = findRoot();

/** A path inside the package: `packagePath('kernel-src')`. */
export const packagePath = (...parts: string[]): string => join(PACKAGE_ROOT, ...parts);
