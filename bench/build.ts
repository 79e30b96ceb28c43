// Benchmark: `ciel build` time per release, cold (empty package cache: downloads, System.map
// extraction, vmlinux decompression included) and warm (everything cached).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildMonitor } from '../compiler/build.ts';

export async function benchBuild(log: (s: string) => void = console.log, releases = ['6.1.0-56-amd64', '6.1.0-56-rt-amd64']) {
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
  log('| release | cold ms | of which fetch+extract ms | warm ms |');
  log('|---|---|---|---|');
  for (const r of rows) log(`| ${r.release} | ${r.coldMs} | ${r.fetchColdMs} | ${r.warmMs} |`);
  return rows;
}
