// The native runtime pieces every monitor is linked with, built once per machine and cached:
//   gmap_fast.bc  the g_map fast path, linked as IR so the optimizer inlines it into every load site
//   rt.o          the miss path, page walker and fault containment (vmi/native/rt.c)
//   libciel_rt.so rt.c alone, for tools and tests that walk guest page tables without a monitor
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { packagePath } from '../common/package-root.ts';
import { cacheDir } from '../common/cache.ts';
import { clang } from './tools.ts';

export const NATIVE_DIR = packagePath('vmi', 'native');

/** Flags shared by both: the fast path gets the kernel monitor's reduced feature set so that it is
 * inline-compatible with any caller (a callee's target features must be a subset of the caller's). */
const FAST_FLAGS = ['-O2', '-fPIC', '-fno-stack-protector', '-mno-sse', '-mno-mmx', '-mno-sse2', '-mno-3dnow', '-mno-avx', '-g0'];
const RT_FLAGS = ['-O2', '-fPIC', '-fvisibility=hidden', '-fno-strict-aliasing', '-g0', '-Wall', '-Werror'];

export interface RuntimeObjects {
  fastBc: string;
  /** the same, built with -fshort-wchar: kernel code's module flag `wchar_size` must match to link */
  fastBcShortWchar: string;
  rtObj: string;
  rtSo: string;
}

const building = new Map<string, Promise<RuntimeObjects>>();

/** Build (once per cache folder and source version) and return the runtime objects. */
export function runtimeObjects(): Promise<RuntimeObjects> {
  const sources = ['ciel_rt.h', 'gmap_fast.c', 'rt.c'].map((f) => readFileSync(join(NATIVE_DIR, f)));
  const key = createHash('sha256').update(Buffer.concat(sources)).update(FAST_FLAGS.join(' ') + RT_FLAGS.join(' ')).digest('hex').slice(0, 16);
  const dir = cacheDir('runtime', key);
  let p = building.get(dir);
  if (!p || !existsSync(join(dir, 'rt.o'))) {
    p = build(dir);
    building.set(dir, p);
  }
  return p;
}

async function build(dir: string): Promise<RuntimeObjects> {
  const out = {
    fastBc: join(dir, 'gmap_fast.bc'),
    fastBcShortWchar: join(dir, 'gmap_fast.short-wchar.bc'),
    rtObj: join(dir, 'rt.o'),
    rtSo: join(dir, 'libciel_rt.so'),
  };
  const make = async (path: string, args: string[], what: string) => {
    if (existsSync(path)) return;
    const tmp = `${path}.${process.pid}.tmp`;
    await clang([...args, '-o', tmp], what);
    renameSync(tmp, path); // atomic: concurrent builders never see a half-written file
  };
  await make(out.fastBc, [...FAST_FLAGS, '-emit-llvm', '-c', join(NATIVE_DIR, 'gmap_fast.c')], 'gmap_fast.c');
  await make(out.fastBcShortWchar, [...FAST_FLAGS, '-fshort-wchar', '-emit-llvm', '-c', join(NATIVE_DIR, 'gmap_fast.c')], 'gmap_fast.c');
  await make(out.rtObj, [...RT_FLAGS, '-c', join(NATIVE_DIR, 'rt.c')], 'rt.c');
  await make(out.rtSo, [...RT_FLAGS, '-shared', '-Wl,-Bsymbolic', join(NATIVE_DIR, 'rt.c')], 'libciel_rt.so');
  return out;
}
