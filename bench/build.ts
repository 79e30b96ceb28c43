// Benchmark: `ciel build` time per release, one per Debian kernel line, cold (empty cache: the private
// apt state's first `apt-get update`, downloads, the streamed -dbg System.map, vmlinux decompression
// where the headers carry no BTF vmlinux, runtime objects) and warm (everything cached).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildMonitor } from '../compiler/build.ts';
import { parseRelease } from '../compiler/kernel/release.ts';

/** one release per line (the ones the live accuracy test boots) */
export const BENCH_RELEASES = ['5.10.0-46-amd64', '6.1.0-56-amd64', '6.12.118+deb13-amd64', '7.3.4+deb13-amd64'];

export async function benchBuild(log: (s: string) => void = console.log, releases = BENCH_RELEASES) {
  const rows: { release: string; coldMs: number; warmMs: number; fetchColdMs: number }[] = [];
  const saved = process.env.CIEL_CACHE;
  for (const release of releases) {
    const cache = mkdtempSync(join(tmpdir(), 'ciel-cold-cache-'));
    const out = mkdtempSync(join(tmpdir(), 'ciel-bench-build-'));
    try {
      process.env.CIEL_CACHE = cache;
      let t0 = performance.now();
      const cold = await buildMonitor({ release, outRoot: out });
      const coldMs = performance.now() - t0;
      t0 = performance.now();
      await buildMonitor({ release, outRoot: out });
      const warmMs = performance.now() - t0;
      rows.push({ release, coldMs: Math.round(coldMs), warmMs: Math.round(warmMs), fetchColdMs: cold.manifest.timings.fetch_ms });
    } finally {
      if (saved === undefined) delete process.env.CIEL_CACHE;
      else process.env.CIEL_CACHE = saved;
      rmSync(cache, { recursive: true, force: true });
      rmSync(out, { recursive: true, force: true });
    }
  }
  log('ciel build: wall time per release (cold = empty package cache, warm = cached packages and runtime objects)');
  log('| line | release | cold ms | of which fetch+extract ms | warm ms |');
  log('|---|---|---|---|---|');
  for (const r of rows) log(`| ${parseRelease(r.release).line} | ${r.release} | ${r.coldMs} | ${r.fetchColdMs} | ${r.warmMs} |`);
  return rows;
}
