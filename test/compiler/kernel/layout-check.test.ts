import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { loadBtf, type Btf } from '../../../compiler/kernel/btf.ts';
import { kernelClangFlags } from '../../../compiler/kernel/flags.ts';
import { checkLayouts, extractLayoutConstants, LayoutMismatchError } from '../../../compiler/kernel/layout-check.ts';
import { fetchHeaders, fetchKernel, type HeaderTree, type KernelTree } from '../../../compiler/kernel/packages.ts';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../../..');
const fixture = join(here, 'fixtures/layouts.c');

describe('extractLayoutConstants', () => {
  it('reads values and path strings from textual IR', () => {
    const ll = [
      '@__ciel_sizeof__cgroup = internal constant i64 1792, align 8',
      '@__ciel_layout__cgroup__kn = internal constant i64 248, align 8',
      '@__ciel_layout_path__cgroup__kn = internal constant [10 x i8] c"cgroup:kn\\00", align 1',
      '@__ciel_layout__task_struct____state = internal constant i64 24, align 8',
      '@__ciel_layout_path__task_struct____state = internal constant [20 x i8] c"task_struct:__state\\00", align 16',
      // after llvm-link: renamed duplicates, other linkage words, no path string
      '@__ciel_layout__cgroup__kn.3 = internal unnamed_addr constant i64 248, align 8',
      '@__ciel_layout__cgroup__self__refcnt = dso_local local_unnamed_addr constant i32 16, align 4',
      '@unrelated = global i64 5',
      '@llvm.used = appending global [1 x ptr] [ptr @__ciel_layout__cgroup__kn], section "llvm.metadata"',
    ].join('\n');
    expect(extractLayoutConstants(ll)).toEqual([
      { struct: 'cgroup', value: 1792, global: '__ciel_sizeof__cgroup' },
      { struct: 'cgroup', field: 'kn', value: 248, global: '__ciel_layout__cgroup__kn' },
      { struct: 'task_struct', field: '__state', value: 24, global: '__ciel_layout__task_struct____state' },
      { struct: 'cgroup', field: 'self.refcnt', value: 16, global: '__ciel_layout__cgroup__self__refcnt' },
    ]);
  });
});

async function compileLayouts(tree: HeaderTree, out: string): Promise<string> {
  await execa('clang-14', [...kernelClangFlags(tree, [join(repo, 'kernel-src')], { emit: 'll' }), '-w', fixture, '-o', out]);
  return readFileSync(out, 'utf8');
}

describe('layout check against the 6.1.0-56-amd64 BTF', () => {
  let amd64: KernelTree;
  let rt: HeaderTree;
  let btf: Btf;
  let tmp: string;
  beforeAll(async () => {
    amd64 = await fetchKernel('6.1.0-56-amd64');
    rt = await fetchHeaders('6.1.0-56-rt-amd64');
    btf = await loadBtf(amd64);
    tmp = mkdtempSync(join(tmpdir(), 'ciel-layout-'));
    return () => rmSync(tmp, { recursive: true, force: true });
  });

  it('passes for the matching headers (amd64 headers, amd64 kernel)', async () => {
    const constants = extractLayoutConstants(await compileLayouts(amd64, join(tmp, 'amd64.ll')));
    expect(constants).toHaveLength(54) // 5 CIEL_SIZEOF + 49 CIEL_LAYOUT in the fixture;
    expect(constants).toContainEqual({ struct: 'cgroup', value: 1792, global: '__ciel_sizeof__cgroup' });
    expect(constants).toContainEqual({
      struct: 'cgroup',
      field: 'bstat.cputime.sum_exec_runtime',
      value: 984,
      global: '__ciel_layout__cgroup__bstat__cputime__sum_exec_runtime',
    });
    const results = checkLayouts(constants, btf);
    expect(results.every((r) => r.ok && r.btf === r.value)).toBe(true);
  });

  it('fails for rt-flavour headers against the amd64 kernel, naming struct, field and both values', async () => {
    const constants = extractLayoutConstants(await compileLayouts(rt, join(tmp, 'rt.ll')));
    expect(constants.find((c) => c.global === '__ciel_sizeof__cgroup')!.value).toBe(1816);
    let err: unknown;
    try {
      checkLayouts(constants, btf);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(LayoutMismatchError);
    const msg = (err as Error).message;
    expect(msg).toContain('sizeof(struct cgroup): headers say 1816, kernel BTF says 1792');
    expect(msg).toContain('offsetof(struct task_struct, __state): headers say 32, kernel BTF says 24');
    expect(msg).toContain('offsetof(struct task_struct, se.sum_exec_runtime): headers say 264, kernel BTF says 200');
    expect(msg).toContain('offsetof(struct mem_cgroup, nodeinfo): headers say 2232, kernel BTF says 2192');
    const failed = (err as LayoutMismatchError).failures.map((f) => `${f.struct}.${f.field ?? '#size'}`);
    expect(failed).toHaveLength(14);
    expect(failed).not.toContain('cgroup.kn'); // unchanged fields still pass
  });

  it('reports a field the kernel does not have', () => {
    const results = checkLayouts([{ struct: 'cgroup', field: 'no_such', value: 8, global: 'x' }], btf, { throwOnMismatch: false });
    expect(results[0]).toMatchObject({ ok: false, btf: undefined });
    expect(results[0]!.problem).toMatch(/offsetof\(struct cgroup, no_such\): headers say 8, but .*has no member 'no_such'/);
  });
});
