// `ciel build` for real Debian kernels: the amd64, rt and cloud (lz4 vmlinuz) flavours build from their own packages, the
// result imports nothing but libc, covers every load, matches the kernel's BTF; and a header set
// that does not belong to the kernel (rt headers against the amd64 BTF) must fail the build.
import { execa } from 'execa';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { buildMonitor } from '../../compiler/build.ts';
import { LayoutMismatchError } from '../../compiler/kernel/layout-check.ts';
import { fetchHeaders, fetchKernel, fetchKernelForBuild } from '../../compiler/kernel/packages.ts';
import { loadSystemMap } from '../../compiler/kernel/system-map.ts';

const out = mkdtempSync(join(tmpdir(), 'ciel-build-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

// 6.1 in every flavour; the other lines in one flavour each (a different one per line)
describe.each(['6.1.0-56-amd64', '6.1.0-56-rt-amd64', '6.1.0-56-cloud-amd64', '5.10.0-46-amd64', '6.12.118+deb13-cloud-amd64', '7.3.4+deb13-rt-amd64'])('ciel build --kernel %s', (release) => {
  it('produces a monitor that imports only libc, translates every guest load and matches the BTF', async () => {
    const r = await buildMonitor({ release, outRoot: out });
    expect(r.manifest.release).toBe(release);
    expect(r.manifest.entryPoints.sort()).toEqual(['ciel_mon_cgroup_v1', 'ciel_mon_cgroup_v2']);
    expect(r.manifest.coverage.ratio).toBe(1);
    expect(r.manifest.coverage.translated).toBe(r.manifest.coverage.loads - r.manifest.coverage.skippedLocal);
    expect(r.manifest.layoutChecks).toBeGreaterThanOrEqual(70);
    // undefined dynamic symbols: libc's only (the runtime is linked in)
    const undef = (await execa('/usr/lib/llvm-14/bin/llvm-nm', ['-D', '--undefined-only', '--format=just-symbols', r.so])).stdout
      .split('\n')
      .map((s) => s.replace(/@.*/, ''))
      .filter(Boolean);
    expect(undef.filter((s) => !/^(_setjmp|longjmp|abort|calloc|free|memcpy|memset|memmove|dl_iterate_phdr|dladdr|__cxa_finalize|__gmon_start__|_ITM_\w+)$/.test(s))).toEqual([]);
    // every slot carries this kernel's System.map address; per-CPU ones are flagged
    const map = loadSystemMap((await fetchKernelForBuild(release)).systemMap);
    for (const s of r.slots) {
      const sym = map.get(s.name)!;
      expect(s.address, s.name).toBe(`0x${sym.address.toString(16)}`);
      expect(s.perCpu, s.name).toBe(sym.perCpu);
    }
    expect(r.slots.map((s) => s.name)).toContain('cgrp_dfl_root');
    expect(r.slots.find((s) => s.name === '__per_cpu_offset')?.perCpu).toBe(false);
    expect(r.slots.some((s) => s.perCpu)).toBe(true);
    // per-CPU symbols slide with KASLR only where the per-CPU section is not at 0 (7.x)
    expect(r.manifest.perCpuStart).toBe(`0x${map.perCpuStart.toString(16)}`);
    expect(map.perCpuStart === 0n).toBe(!release.startsWith('7.'));
    // the generated bindings decode what the C header defines
    const abi = await import(pathToFileURL(join(r.outDir, 'abi.ts')).href);
    expect(abi.CIEL_CGROUP_REC_SIZE).toBe(384);
    expect(abi.CIEL_CGROUP_REC_OFFSETS).toMatchObject({ cpu_usage_ns: 0, pids: 80, flags: 100, memory_inactive_file_pages: 124, path: 128 });
    expect(readFileSync(join(r.outDir, 'abi.ts'), 'utf8')).toContain('export function decodeCielCgroupRec');
  }, 600_000);
});

it('refuses headers of another flavour: rt headers with the amd64 kernel (BTF) fail naming the fields', async () => {
  const amd64 = await fetchKernel('6.1.0-56-amd64');
  const rt = await fetchHeaders('6.1.0-56-rt-amd64');
  let err: unknown;
  try {
    await buildMonitor({ tree: { ...amd64, commonDir: rt.commonDir, archDir: rt.archDir }, outRoot: join(out, 'mismatch') });
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(LayoutMismatchError);
  expect((err as Error).message).toMatch(/cgroup/);
  expect((err as Error).message).toMatch(/headers say \d+, kernel BTF says \d+/);
}, 600_000);
