// What is shipped: `npm pack` (prepack builds dist/), `npm install -g` of the tarball into a fresh prefix,
// then the installed `ciel` -- compiled JavaScript, runtime dependencies only -- shows its help, builds the
// monitor for the bundled kernel (packages from the cache), and reads a real guest dump with exactly the
// numbers the checkout's own build reads from the same dump.
import { execa } from 'execa';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GENERATED } from '../../common/build-artifact.ts';
import { guestDump, RELEASE } from '../../testbed/elf-dump.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
let work: string;
let ciel: string;
let pkgDir: string;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'ciel-pack-'));
  const pack = await execa('npm', ['pack', '--pack-destination', work, '--silent'], { cwd: ROOT });
  const tarball = join(work, pack.stdout.trim().split('\n').pop()!);
  await execa('npm', ['install', '-g', '--prefix', join(work, 'prefix'), '--prefer-offline', '--no-audit', '--no-fund', tarball], { cwd: work });
  ciel = join(work, 'prefix', 'bin', 'ciel');
  pkgDir = join(work, 'prefix', 'lib', 'node_modules', 'ciel');
}, 300_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('the npm package', () => {
  it('holds compiled JavaScript and runtime dependencies only (no TypeScript loader, no test tools, no testbed)', () => {
    const deps = readdirSync(join(pkgDir, 'node_modules'));
    for (const dev of ['tsx', 'vitest', 'typescript', 'dependency-cruiser', 'esbuild']) expect(deps).not.toContain(dev);
    expect(existsSync(join(pkgDir, 'dist', 'cli', 'main.js'))).toBe(true);
    expect(existsSync(join(pkgDir, 'dist', 'testbed'))).toBe(false);
    expect(existsSync(join(pkgDir, 'test'))).toBe(false);
    expect(existsSync(join(pkgDir, 'kernel-src', 'cgroup_v2.c'))).toBe(true);
    expect(existsSync(join(pkgDir, 'vmi', 'native', 'rt.c'))).toBe(true);
  });

  it('`ciel --help` lists every command', async () => {
    const r = await execa(ciel, ['--help']);
    for (const cmd of ['build', 'monitor', 'autoscale', 'instrument']) expect(r.stdout).toMatch(new RegExp(`^  ${cmd}\\b`, 'm'));
  });

  it('`ciel build` and `ciel monitor --vmcore` from the installed package read what the checkout reads', async () => {
    const dump = await guestDump();
    const gen = join(work, 'generated');
    await execa(ciel, ['build', '--kernel', RELEASE, '--out', gen], { timeout: 600_000 });
    const installed = JSON.parse(readFileSync(join(gen, RELEASE, 'manifest.json'), 'utf8')) as { layoutChecks: number; slots: number; entryPoints: string[] };
    const checkout = JSON.parse(readFileSync(join(GENERATED, RELEASE, 'manifest.json'), 'utf8')) as typeof installed;
    expect(installed.layoutChecks).toBe(checkout.layoutChecks);
    expect(installed.slots).toBe(checkout.slots);
    expect(installed.entryPoints).toEqual(checkout.entryPoints);

    const strip = (line: string) => {
      const j = JSON.parse(line) as { containers: unknown[]; kernel: string };
      return { kernel: j.kernel, containers: j.containers };
    };
    const fromPackage = await execa(ciel, ['monitor', '--vmcore', dump, '--kernel', RELEASE, '--json'], { env: { CIEL_GENERATED: gen } });
    const fromCheckout = await execa(process.execPath, [join(ROOT, 'bin', 'ciel.mjs'), 'monitor', '--vmcore', dump, '--kernel', RELEASE, '--json']);
    const a = strip(fromPackage.stdout.trim());
    expect(a.containers.length).toBeGreaterThan(0);
    expect(a).toEqual(strip(fromCheckout.stdout.trim()));
  }, 900_000);
});
