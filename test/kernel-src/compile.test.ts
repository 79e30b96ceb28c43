// Compiles every kernel-src/*.c against the guest kernel headers (6.1.0-56-amd64, and the rt
// flavour when its headers are extracted) and checks the IR properties the Ciel pass relies on:
// no inline asm (except register-only), no address spaces (gs/fs per-CPU), only llvm.*
// declarations (no out-of-line kernel or libc function), no traps (BUG/WARN ud2), no atomics,
// no TLS, every store into an alloca / `out` (never through a pointer loaded from memory or into
// a kernel global), only ciel_mon_* functions left (everything else inlined) with the runtime's
// signature. Also: ciel_abi.h compiles as plain host C with the same sizes.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { cacheDir } from '../../common/cache.ts';
import { fetchHeaders } from '../../compiler/kernel/packages.ts';
import { beforeAll, describe, expect, it } from 'vitest';
import { checkIr, type IrReport } from './ir-check.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const KSRC = join(ROOT, 'kernel-src');
// where fetchHeaders() extracts (CIEL_CACHE honoured), unless CIEL_KERNELS names another tree
const KERNELS = process.env.CIEL_KERNELS ?? cacheDir('kernels');
const SOURCES = readdirSync(KSRC).filter((f) => f.endsWith('.c')).sort();
const ENTRY_SIG = /^define (?:dso_local )?i64 @ciel_mon_\w+\(i8\* [^,]*%0, i64 [^,]*%1, i8\* [^,]*%2, i64 [^,]*%3\)/;

function hasKernel(ver: string): boolean {
  return existsSync(join(KERNELS, ver, 'usr/src', `linux-headers-${ver}`, 'include/generated/autoconf.h'));
}

function compileAll(ver: string): { dir: string; reports: Map<string, IrReport>; texts: Map<string, string> } {
  const dir = mkdtempSync(join(tmpdir(), `ciel-ksrc-${ver}-`));
  execFileSync(join(KSRC, 'dev-compile.sh'), ['--kernel', ver, dir], {
    env: { ...process.env, CIEL_KERNELS: KERNELS },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const reports = new Map<string, IrReport>();
  const texts = new Map<string, string>();
  for (const src of SOURCES) {
    const ll = readFileSync(join(dir, src.replace(/\.c$/, '.ll')), 'utf8');
    texts.set(src, ll);
    reports.set(src, checkIr(ll));
  }
  return { dir, reports, texts };
}

/** IR of one extra C file compiled exactly like kernel-src (for the checker's negative tests). */
function compileSnippet(ver: string, code: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'ciel-ksrc-neg-'));
  const src = join(dir, 'neg.c');
  writeFileSync(src, code);
  const r = spawnSync('sh', ['-c', `
    set -e
    mkdir -p ${dir}/k && cp ${KSRC}/dev-compile.sh ${KSRC}/*.h ${dir}/k/ && cp -r ${KSRC}/shim ${dir}/k/ && cp ${src} ${dir}/k/
    ${dir}/k/dev-compile.sh --kernel ${ver} ${dir}/out >/dev/null`], { env: { ...process.env, CIEL_KERNELS: KERNELS }, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return readFileSync(join(dir, 'out/neg.ll'), 'utf8');
}

const FLAVOURS = ['6.1.0-56-amd64', '6.1.0-56-rt-amd64'];

for (const ver of FLAVOURS) {
  describe(`kernel-src against ${ver} headers`, () => {
    let res: ReturnType<typeof compileAll>;
    beforeAll(async () => {
      // fetched (and cached under ${CIEL_CACHE:-~/.cache/ciel}) when missing, instead of skipping on a fresh machine
      if (!hasKernel(ver)) await fetchHeaders(ver, { onProgress: () => {} });
      res = compileAll(ver);
    }, 900_000);

    it('compiles every kernel-src/*.c', () => {
      expect(SOURCES).toEqual(expect.arrayContaining(['cgroup_v1.c', 'cgroup_v2.c', 'layout.c']));
      expect([...res.reports.keys()]).toEqual(SOURCES);
    });

    for (const src of SOURCES) {
      describe(src, () => {
        const rep = () => res.reports.get(src)!;

        it('has no inline asm except register-only', () => {
          const bad = rep().asm.filter((a) => !a.registerOnly);
          expect(bad).toEqual([]);
        });
        it('has no non-zero address space (gs/fs per-CPU accesses)', () => {
          expect(rep().addrspaces).toEqual([]);
        });
        it('declares only LLVM intrinsics', () => {
          expect(rep().declares.filter((d) => !d.startsWith('llvm.'))).toEqual([]);
        });
        it('has no traps, atomics or TLS', () => {
          expect(rep().traps).toEqual([]);
          expect(rep().atomics).toEqual([]);
          expect(rep().tls).toEqual([]);
          expect(res.texts.get(src)).not.toMatch(/\bud2\b/);
        });
        it('stores only into local memory or out', () => {
          expect(rep().badStores).toEqual([]);
        });
        it('leaves only ciel_mon_* entry points with the runtime signature', () => {
          for (const f of rep().defines) {
            expect(f.name).toMatch(/^ciel_mon_\w+$/);
            expect(f.header).toMatch(ENTRY_SIG);
          }
        });
      });
    }

    it('exports the v1 and v2 monitors and they read guest memory', () => {
      const v2 = res.reports.get('cgroup_v2.c')!;
      const v1 = res.reports.get('cgroup_v1.c')!;
      expect(v2.defines.map((f) => f.name)).toEqual(['ciel_mon_cgroup_v2']);
      expect(v1.defines.map((f) => f.name)).toEqual(['ciel_mon_cgroup_v1']);
      for (const r of [v1, v2]) {
        expect(r.loads).toBeGreaterThan(100);
        expect(r.externalGlobals).toEqual(expect.arrayContaining(['@cgrp_dfl_root', '@__per_cpu_offset', '@nr_cpu_ids']));
      }
      expect(v1.externalGlobals).toContain('@cgroup_roots');
      // eslint-disable-next-line no-console
      console.log(`[${ver}] IR: ${[...res.reports].map(([f, r]) => `${f}: ${r.defines.length} fn, ${r.loads} loads (${r.volatileLoads} volatile), ${r.stores} stores, ${r.asm.length} asm`).join('; ')}`);
    });

    it('the Ciel pass (passes/instrument.ts) accepts the monitors: no refusal, every guest load translated', async () => {
      const { IRModule } = await import('../../passes/llvm/ir.ts');
      const { instrumentModule } = await import('../../passes/instrument.ts');
      for (const src of ['cgroup_v1.c', 'cgroup_v2.c']) {
        const m = IRModule.load(join(res.dir, src.replace(/\.c$/, '.ll')));
        try {
          const r = instrumentModule(m, { strict: false });
          expect(r.refusals, src).toEqual([]);
          expect(r.coverage, src).toBe(1);
          // eslint-disable-next-line no-console
          console.log(`[${ver}] pass on ${src}: ${r.loads.total} loads, ${r.loads.translated} translated, ${r.loads.skippedLocal} provably local, ` +
            `slots ${r.slots.map((x: { name: string }) => x.name).join(' ')}`);
        } finally {
          m.dispose();
        }
      }
    });

    if (ver === '6.1.0-56-amd64') {
      it('checker catches guest stores, guest indices, asm and kernel calls (negative control)', () => {
        const ll = compileSnippet(ver, `
#include <linux/cgroup.h>
#include <linux/sched.h>
long ciel_mon_neg(void *out, unsigned long out_len, const void *in, unsigned long in_len)
{
	struct cgroup *c = &cgrp_dfl_root.cgrp;
	char *o = out;
	c->kn->flags = 1;                       /* store through a guest pointer */
	o[c->level] = 1;                        /* store at a guest-controlled index */
	cgrp_dfl_root.flags = 2;                /* store into a kernel global */
	o[0] = current->pid;                    /* gs-relative asm */
	return (long)css_next_child(NULL, &c->self); /* out-of-line kernel function */
}
`);
        const r = checkIr(ll);
        expect(r.badStores.some((b) => /loaded pointer/.test(b))).toBe(true);
        expect(r.badStores.some((b) => /guest-derived integer/.test(b))).toBe(true);
        expect(r.badStores.some((b) => /external global @cgrp_dfl_root/.test(b))).toBe(true);
        expect(r.declares).toContain('css_next_child');
        expect(r.asm.length + r.addrspaces.length).toBeGreaterThan(0);
      });

      it('shim turns static keys into plain loads of key->enabled', () => {
        const ll = compileSnippet(ver, `
#include <linux/memcontrol.h>
long ciel_mon_keys(void *out, unsigned long out_len, const void *in, unsigned long in_len)
{
	char *o = out;
	o[0] = mem_cgroup_disabled();      /* static_branch_likely(&memory_cgrp_subsys_enabled_key) */
	o[1] = memcg_kmem_enabled();       /* static_branch_likely on a static_key_false */
	return 0;
}
`);
        const r = checkIr(ll);
        expect(r.asm).toEqual([]);
        expect(r.declares.filter((d) => !d.startsWith('llvm.'))).toEqual([]);
        expect(r.badStores).toEqual([]);
        expect(r.externalGlobals).toEqual(expect.arrayContaining(['@memory_cgrp_subsys_enabled_key', '@memcg_kmem_enabled_key']));
        expect(ll).not.toMatch(/__jump_table/);
      });
    }
  });
}

describe('ciel_abi.h', () => {
  it('compiles as plain host C with the pinned sizes', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ciel-abi-'));
    const src = join(dir, 'abi.c');
    writeFileSync(src, `#include "ciel_abi.h"
#include <stdio.h>
int main(void) { printf("%zu %zu %zu\\n", sizeof(struct ciel_mon_hdr), sizeof(struct ciel_cgroup_rec), sizeof(struct ciel_mon_args)); return 0; }
`);
    try {
      execFileSync('clang-14', ['-std=c11', '-Wall', '-Werror', '-I', KSRC, '-o', join(dir, 'abi'), src]);
      expect(execFileSync(join(dir, 'abi'), { encoding: 'utf8' }).trim()).toBe('64 384 32');
      execFileSync('clang-14', ['-std=c11', '-m32', '-fsyntax-only', '-I', KSRC, '-x', 'c', '-'], { input: '#include "ciel_abi.h"\n' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
