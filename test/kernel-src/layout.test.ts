// Struct layouts the monitors rely on, checked against the guest kernel's own BTF (vmlinux + veth.ko's
// split BTF, from the extracted kernel or the image .deb), for the amd64 and the rt flavour:
//  1. every CIEL_LAYOUT / CIEL_SIZEOF constant that layout.c emits (the fields in
//     kernel-src/ciel_fields.h) equals the BTF offset / size;
//  2. every member of every struct mirrored in kernel-src/ciel_private.h (structs private to
//     kernel .c files / private headers) sits where BTF says, and the sizes match.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadBtf, loadModuleBtf, readElfSection, type Btf } from '../../compiler/kernel/btf.ts';
import { btfDefines } from '../../compiler/kernel/btf-defines.ts';
import { kernelClangFlags } from '../../compiler/kernel/flags.ts';
import { fetchKernel, type KernelTree } from '../../compiler/kernel/packages.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const KSRC = join(ROOT, 'kernel-src');

const MIRRORS = ['cgrp_cset_link', 'pids_cgroup', 'cpuacct', 'blkg_iostat', 'blkg_iostat_set', 'blkcg_gq', 'blkcg'];
const VETH_MIRRORS = ['veth_stats', 'veth_rq_stats', 'veth_rq', 'veth_priv'];
/** 6.10+: memcg's per-node stats are private to mm/memcontrol.c */
const MEMCG_MIRRORS = ['lruvec_stats', 'lruvec_stats_percpu'];

/** veth.ko of the tree, decompressed when it is a .ko.xz (6.12, 7.x) */
function vethKo(tree: KernelTree): string {
  const base = join(tree.modulesDir!, 'kernel/drivers/net/veth');
  if (existsSync(`${base}.ko`)) return `${base}.ko`;
  const out = join(mkdtempSync(join(tmpdir(), 'ciel-veth-')), 'veth.ko');
  writeFileSync(out, execFileSync('xz', ['-dc', `${base}.ko.xz`], { maxBuffer: 64 << 20 }));
  return out;
}

/** clang-14 to textual IR with exactly the flags `ciel build` uses (kernel line flags, BTF defines). */
function compileLl(tree: KernelTree, defines: string[], file: string, code?: string, extra: string[] = []): string {
  const dir = mkdtempSync(join(tmpdir(), 'ciel-layout-'));
  let src = join(KSRC, file);
  if (code !== undefined) {
    src = join(dir, file);
    writeFileSync(src, code);
  }
  const out = join(dir, 'out.ll');
  execFileSync('clang-14', [...kernelClangFlags(tree, [join(KSRC, 'shim'), KSRC], { emit: 'll' }), ...defines, ...extra, '-Wno-everything', '-o', out, src], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return readFileSync(out, 'utf8');
}

function irConstants(ll: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const x of ll.matchAll(/^@([\w.$]+) = .*?constant i64 (-?\d+)/gm)) m.set(x[1], Number(x[2]));
  return m;
}

function irStrings(ll: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const x of ll.matchAll(/^@([\w.$]+) = .*?constant \[\d+ x i8\] c"([^"]*)"/gm)) m.set(x[1], x[2].replace(/\\00$/, ''));
  return m;
}

// one release per line, plus 6.1's rt flavour (different layouts from the same ABI); fetched and cached
for (const ver of ['6.1.0-56-amd64', '6.1.0-56-rt-amd64', '5.10.0-46-amd64', '6.12.118+deb13-amd64', '7.3.4+deb13-amd64']) {
  describe(`layouts vs BTF of ${ver}`, () => {
    let tree: KernelTree;
    let btf: Btf;
    let defines: string[];
    /** 5.10's veth.ko carries no BTF: its mirrors are checked live only (the accuracy test's net counters) */
    let vethBtf = true;
    beforeAll(async () => {
      tree = await fetchKernel(ver, { onProgress: () => {} });
      const base = await loadBtf(tree);
      defines = btfDefines(base);
      const ko = vethKo(tree);
      try {
        readElfSection(ko, '.BTF');
      } catch {
        vethBtf = false;
      }
      btf = vethBtf ? loadModuleBtf(ko, base) : base;
    }, 900_000);

    it('veth.ko has split BTF exactly where expected (none on 5.10)', () => {
      expect(vethBtf).toBe(!ver.startsWith('5.10.'));
    });

    it('every CIEL_LAYOUT / CIEL_SIZEOF in layout.c matches BTF', () => {
      // with the module (veth.ko) entries too: this test loads veth.ko's split BTF
      const ll = compileLl(tree, defines, 'layout.c', undefined, vethBtf ? ['-DCIEL_LAYOUT_MODULE_BTF'] : []);
      const consts = irConstants(ll);
      const paths = irStrings(ll);
      // how many fields ciel_fields.h lists for this kernel (its per-line lists expanded by the preprocessor)
      const count = irConstants(compileLl(tree, defines, 'count.c',
        '#include "ciel_fields.h"\n#define CIEL_ONE(...) + 1\nconst unsigned long ciel_count = 0 CIEL_FIELDS(CIEL_ONE)' +
        (vethBtf ? ' CIEL_FIELDS_VETH(CIEL_ONE)' : '') + ';\n'));
      const listed = count.get('ciel_count')!;
      expect(listed).toBeGreaterThan(60);
      const checked: string[] = [];
      const mismatches: string[] = [];
      for (const [name, value] of consts) {
        if (name.startsWith('__ciel_layout__')) {
          const path = paths.get(name.replace('__ciel_layout__', '__ciel_layout_path__'));
          expect(path, name).toBeDefined();
          const [st, field] = path!.split(':');
          const want = btf.memberOffset(st, field);
          checked.push(path!);
          if (want !== value) mismatches.push(`${path}: headers ${value}, BTF ${want}`);
        } else if (name.startsWith('__ciel_sizeof__')) {
          const st = name.slice('__ciel_sizeof__'.length);
          const want = btf.structSize(st);
          checked.push(`sizeof ${st}`);
          if (want !== value) mismatches.push(`sizeof(struct ${st}): headers ${value}, BTF ${want}`);
        }
      }
      expect(mismatches).toEqual([]);
      expect(checked.filter((c) => !c.startsWith('sizeof')).length).toBe(listed);
      // eslint-disable-next-line no-console
      console.log(`[${ver}] checked ${checked.length} layout constants against BTF`);
    });

    it('every member of the private-struct mirrors matches BTF', () => {
      const lines: string[] = ['#include "ciel_cgroup.h"', '#include "ciel_net.h"'];
      const expected = new Map<string, number>();
      let n = 0;
      const mirrors = [...MIRRORS, ...(vethBtf ? VETH_MIRRORS : []), ...(defines.some((d) => d.startsWith('-DCIEL_NR_MEMCG')) ? MEMCG_MIRRORS : [])];
      for (const st of mirrors) {
        const t = btf.findStruct(st);
        expect(t, `struct ${st} in BTF`).toBeDefined();
        lines.push(`const unsigned long ciel_probe_${n} = sizeof(struct ${st});`);
        expected.set(`ciel_probe_${n++}`, t.size!);
        for (const m of t!.members!) {
          if (!m.name || m.bitfieldSize) continue;
          lines.push(`const unsigned long ciel_probe_${n} = __builtin_offsetof(struct ${st}, ${m.name});`);
          expected.set(`ciel_probe_${n++}`, m.bitOffset / 8);
        }
      }
      const got = irConstants(compileLl(tree, defines, 'probe.c', lines.join('\n') + '\n'));
      const names = lines.slice(2);
      const mismatches: string[] = [];
      let i = 0;
      for (const [probe, want] of expected) {
        if (got.get(probe) !== want) mismatches.push(`${names[i]} -> ${got.get(probe)}, BTF ${want}`);
        i++;
      }
      expect(mismatches).toEqual([]);
      expect(expected.size).toBeGreaterThan(vethBtf ? 60 : 40);
    });
  });
}
