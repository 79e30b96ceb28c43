// Benchmark: `ciel build` time per release, one per Debian kernel line, cold (empty cache: the private
// apt state's first `apt-get update`, downloads, the streamed -dbg System.map, vmlinux decompression
// where the headers carry no BTF vmlinux, runtime objects) and warm (everything cached).
// Second table: what the cold fetch spent on what, read from the build's own log lines — System.map
// (streamed by HTTP Range out of the -dbg package: compressed bytes read of the package's data member)
// against the headers/image downloads, and System.map alone once more (only its cache entry removed).
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildMonitor } from '../compiler/build.ts';
import { fetchKernelForBuild } from '../compiler/kernel/packages.ts';
import { parseRelease } from '../compiler/kernel/release.ts';

/** one release per line (the ones the live accuracy test boots) */
export const BENCH_RELEASES = ['5.10.0-46-amd64', '6.1.0-56-amd64', '6.12.118+deb13-amd64', '7.3.4+deb13-amd64'];

/** Cold-fetch figures from the fetch's log lines (compiler/kernel/packages.ts, apt.ts). */
export interface FetchSteps {
  aptUpdateS: number;
  downloadMiB: number;
  downloadS: number;
  extractS: number;
  mapStreamedMiB: number;
  dbgDataMiB: number;
  mapS: number;
  fetchS: number;
}

export function parseFetchLog(lines: string[]): FetchSteps {
  const f: FetchSteps = { aptUpdateS: 0, downloadMiB: 0, downloadS: 0, extractS: 0, mapStreamedMiB: 0, dbgDataMiB: 0, mapS: 0, fetchS: 0 };
  for (const l of lines) {
    let m: RegExpExecArray | null;
    if ((m = /^apt-get update done in ([\d.]+) s/.exec(l))) f.aptUpdateS += Number(m[1]);
    else if ((m = /^downloaded \S+ \(([\d.]+) MiB\) in ([\d.]+) s/.exec(l))) {
      f.downloadMiB += Number(m[1]);
      f.downloadS += Number(m[2]);
    } else if ((m = /^extracted System\.map from \S+ in ([\d.]+) s \((?:read|streamed) ([\d.]+) of ([\d.]+) MiB/.exec(l))) {
      f.mapS += Number(m[1]);
      f.mapStreamedMiB += Number(m[2]);
      f.dbgDataMiB = Number(m[3]);
    } else if ((m = /^extracted .* in ([\d.]+) s$/.exec(l))) f.extractS += Number(m[1]);
    else if ((m = /^kernel \S+ ready in ([\d.]+) s/.exec(l))) f.fetchS += Number(m[1]);
  }
  return f;
}

interface Row {
  release: string;
  coldMs: number;
  warmMs: number;
  fetchColdMs: number;
  cold: FetchSteps;
  /** System.map fetched again with only its cache entry removed */
  mapAgain: FetchSteps;
  mapBytes: number;
}

export async function benchBuild(log: (s: string) => void = console.log, releases = BENCH_RELEASES) {
  const rows: Row[] = [];
  const saved = process.env.CIEL_CACHE;
  for (const release of releases) {
    const cache = mkdtempSync(join(tmpdir(), 'ciel-cold-cache-'));
    const out = mkdtempSync(join(tmpdir(), 'ciel-bench-build-'));
    try {
      process.env.CIEL_CACHE = cache;
      const lines: string[] = [];
      let t0 = performance.now();
      const cold = await buildMonitor({ release, outRoot: out, log: (l) => lines.push(l) });
      const coldMs = performance.now() - t0;
      t0 = performance.now();
      await buildMonitor({ release, outRoot: out });
      const warmMs = performance.now() - t0;
      // System.map alone: remove only its file and stamp in this private cache, fetch again
      const kdir = join(cache, 'kernels', release);
      const mapBytes = statSync(join(kdir, 'System.map')).size;
      rmSync(join(kdir, 'System.map'));
      for (const s of readdirSync(join(kdir, '.ciel'))) if (s.startsWith('system-map--')) rmSync(join(kdir, '.ciel', s));
      const again: string[] = [];
      await fetchKernelForBuild(release, { log: (l) => again.push(l), onProgress: () => {} });
      if (!existsSync(join(kdir, 'System.map'))) throw new Error(`System.map of ${release} not fetched again`);
      rows.push({
        release,
        coldMs: Math.round(coldMs),
        warmMs: Math.round(warmMs),
        fetchColdMs: cold.manifest.timings.fetch_ms,
        cold: parseFetchLog(lines),
        mapAgain: parseFetchLog(again),
        mapBytes,
      });
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
  log('');
  log('cold fetch, per step: System.map streamed out of the -dbg package (compressed MiB read of its data member) vs the other packages');
  log('| line | System.map streamed MiB / -dbg data MiB | System.map s (cold / again) | System.map file MiB | other .debs downloaded MiB | their download s | dpkg/vmlinuz extract s | apt-get update s | whole fetch s | cold build s | System.map share of cold build |');
  log('|---|---|---|---|---|---|---|---|---|---|---|');
  const n1 = (x: number) => x.toFixed(1);
  for (const r of rows) {
    const c = r.cold;
    log(
      `| ${parseRelease(r.release).line} | ${n1(c.mapStreamedMiB)} / ${n1(c.dbgDataMiB)} | ${c.mapS.toFixed(2)} / ${r.mapAgain.mapS.toFixed(2)} | ${n1(r.mapBytes / 1048576)} | ` +
        `${n1(c.downloadMiB)} | ${n1(c.downloadS)} | ${n1(c.extractS)} | ${n1(c.aptUpdateS)} | ${n1(c.fetchS)} | ${n1(r.coldMs / 1000)} | ${((c.mapS * 100000) / r.coldMs).toFixed(1)} % |`,
    );
  }
  return rows;
}
