// Struct layouts the monitors rely on, checked against the guest kernel's own BTF (vmlinux + veth.ko's
// split BTF, from the extracted kernel or the image .deb), for the amd64 and the rt flavour:
//  1. every CIEL_LAYOUT / CIEL_SIZEOF constant that layout.c emits (the fields in
//     kernel-src/ciel_fields.h) equals the BTF offset / size;
//  2. every member of every struct mirrored in kernel-src/ciel_private.h (structs private to
//     kernel .c files / private headers) sits where BTF says, and the sizes match.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { extractVmlinux, loadModuleBtf, parseBtf, readElfSection, type Btf } from '../../compiler/kernel/btf.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const KSRC = join(ROOT, 'kernel-src');
const KERNELS = process.env.CIEL_KERNELS ?? join(process.env.HOME ?? '/root', '.cache/ciel/kernels');
const DEBS = process.env.CIEL_DEBS ?? join(process.env.HOME ?? '/root', '.cache/ciel/debs');

const MIRRORS = ['cgrp_cset_link', 'pids_cgroup', 'cpuacct', 'blkg_iostat', 'blkg_iostat_set', 'blkcg_gq', 'blkcg',
  'veth_stats', 'veth_rq_stats', 'veth_rq', 'veth_priv'];

interface Flavour { ver: string; kdir: string; K: string; O: string; imageDeb?: string }

function flavour(ver: string): Flavour {
  const kdir = join(KERNELS, ver);
  const abi = ver.replace(/-(rt-)?amd64$/, '');
  const common = ver.includes('-rt-') ? `linux-headers-${abi}-common-rt` : `linux-headers-${abi}-common`;
  const deb = existsSync(DEBS) ? readdirSync(DEBS).find((f) => f.startsWith(`linux-image-${ver}-unsigned_`) && f.endsWith('.deb')) : undefined;
  return { ver, kdir, K: join(kdir, 'usr/src', common), O: join(kdir, 'usr/src', `linux-headers-${ver}`), imageDeb: deb && join(DEBS, deb) };
}

/** A file of the kernel image: from the extracted tree if there, else pulled out of the image .deb. */
function imageFile(f: Flavour, rel: string): string | undefined {
  const inTree = join(f.kdir, rel);
  if (existsSync(inTree)) return inTree;
  if (!f.imageDeb) return undefined;
  const dir = join(tmpdir(), `ciel-btf-${f.ver}`);
  const out = join(dir, rel);
  if (!existsSync(out)) {
    mkdirSync(dir, { recursive: true });
    execFileSync('sh', ['-c', `dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" "./${rel}"`, 'sh', f.imageDeb, dir]);
  }
  return out;
}

/** The kernel's BTF with veth.ko's split BTF on top (compiler/kernel/btf.ts, as `ciel build` uses). */
async function loadFlavourBtf(f: Flavour): Promise<Btf> {
  let vmlinux = join(f.kdir, 'vmlinux');
  if (!existsSync(vmlinux)) {
    vmlinux = join(tmpdir(), `ciel-btf-${f.ver}`, 'vmlinux');
    if (!existsSync(vmlinux)) await extractVmlinux(imageFile(f, `boot/vmlinuz-${f.ver}`)!, vmlinux);
  }
  const base = parseBtf(readElfSection(vmlinux, '.BTF'), vmlinux);
  return loadModuleBtf(imageFile(f, `lib/modules/${f.ver}/kernel/drivers/net/veth.ko`)!, base);
}

function compileLl(f: Flavour, file: string, code?: string, defines: string[] = []): string {
  const dir = mkdtempSync(join(tmpdir(), 'ciel-layout-'));
  let src = join(KSRC, file);
  if (code !== undefined) {
    src = join(dir, file);
    writeFileSync(src, code);
  }
  const { K, O } = f;
  const res = execFileSync('clang-14', ['-print-file-name=include'], { encoding: 'utf8' }).trim();
  const out = join(dir, 'out.ll');
  execFileSync('clang-14', [
    '-nostdinc', '-isystem', res, `-I${KSRC}/shim`, `-I${KSRC}`,
    `-I${K}/arch/x86/include`, `-I${O}/arch/x86/include/generated`, `-I${K}/include`, `-I${O}/include`,
    `-I${K}/arch/x86/include/uapi`, `-I${O}/arch/x86/include/generated/uapi`, `-I${K}/include/uapi`, `-I${O}/include/generated/uapi`,
    '-include', `${K}/include/linux/compiler-version.h`, '-include', `${K}/include/linux/kconfig.h`,
    '-include', `${K}/include/linux/compiler_types.h`,
    '-D__KERNEL__', '-DKBUILD_MODNAME="ciel"', '--target=x86_64-linux-gnu', '-std=gnu11', '-O2',
    '-fno-strict-aliasing', '-fno-common', '-fPIC', '-fno-builtin', '-mno-sse', '-mno-mmx', '-mno-sse2', '-mno-avx',
    '-Wno-everything', '-g0', ...defines.map((d) => `-D${d}`), '-S', '-emit-llvm', '-o', out, src,
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
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

for (const ver of ['6.1.0-56-amd64', '6.1.0-56-rt-amd64']) {
  const f = flavour(ver);
  const usable = existsSync(join(f.O, 'include/generated/autoconf.h')) &&
    (existsSync(join(f.kdir, 'vmlinux')) || existsSync(join(f.kdir, `boot/vmlinuz-${ver}`)) || !!f.imageDeb) &&
    (existsSync(join(f.kdir, `lib/modules/${ver}/kernel/drivers/net/veth.ko`)) || !!f.imageDeb);
  describe.skipIf(!usable && ver !== '6.1.0-56-amd64')(`layouts vs BTF of ${ver}`, () => {
    let btf: Btf;
    beforeAll(async () => {
      btf = await loadFlavourBtf(f);
    });
    it('every CIEL_LAYOUT / CIEL_SIZEOF in layout.c matches BTF', () => {
      // with the module (veth.ko) entries too: this test loads veth.ko's split BTF
      const ll = compileLl(f, 'layout.c', undefined, ['CIEL_LAYOUT_MODULE_BTF']);
      const consts = irConstants(ll);
      const paths = irStrings(ll);
      const fieldsH = readFileSync(join(KSRC, 'ciel_fields.h'), 'utf8');
      const listed = [...fieldsH.matchAll(/^\s*X\((\w+)((?:,\s*\w+)+)\)/gm)].length;
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
      for (const st of MIRRORS) {
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
      const got = irConstants(compileLl(f, 'probe.c', lines.join('\n') + '\n'));
      const names = lines.slice(2);
      const mismatches: string[] = [];
      let i = 0;
      for (const [probe, want] of expected) {
        if (got.get(probe) !== want) mismatches.push(`${names[i]} -> ${got.get(probe)}, BTF ${want}`);
        i++;
      }
      expect(mismatches).toEqual([]);
      expect(expected.size).toBeGreaterThan(60);
    });
  });
}
