// `npm run demo`. Today: the whole compile-time VMI pipeline on a synthetic guest (no VM needed):
// C reader -> clang -> instrument -> g_map inlined -> .so -> read kernel-like lists out of guest
// memory through real x86-64 page tables, then show a hostile pointer being contained.
// The live-VM autoscaling demo (issue: fine-grained autoscaler) will replace this.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RawFileBackend } from '../runtime/backends/raw-file.ts';
import { GuestFaultError } from '../runtime/errors.ts';
import { NativeRuntime } from '../runtime/native-runtime.ts';
import { buildWorld, compileReader, decodeWalkOut, WALK_OUT_SIZE } from '../test/synthetic/fixture.ts';

const dir = mkdtempSync(join(tmpdir(), 'ciel-demo-'));
try {
  console.log('1. compiling test/synthetic/reader.c through clang-14 -> instrument -> g_map fast path -> O2 -> .so');
  const built = await compileReader(join(dir, 'build'));
  const r = built.report!;
  console.log(`   ${r.loads.total} loads: ${r.loads.translated} translated, ${r.loads.skippedLocal} proven local, ${r.memcpySources} memcpy source(s); coverage ${(r.coverage * 100).toFixed(0)}%`);
  console.log(`   kernel symbols via slots: ${r.slots.map((s) => s.name).join(', ')}  (${JSON.stringify(built.timings)})`);

  console.log('2. building a synthetic guest: 4-level page tables, 1 GiB / 2 MiB / 4 KiB pages, 200 tasks on a list');
  const world = buildWorld(false);
  const mem = join(dir, 'guest.raw');
  world.guest.saveRaw(mem);
  const rt = new NativeRuntime(built.so);
  rt.attach(new RawFileBackend(mem), { cr3: world.guest.cr3, cr4: world.guest.cr4 });
  rt.writeU64s('__ciel_slots', r.slots.map((s) => world.symbols[s.name]));

  const out = Buffer.alloc(WALK_OUT_SIZE);
  const t0 = performance.now();
  const { stats } = rt.call('ciel_mon_walk', out);
  const us = ((performance.now() - t0) * 1000).toFixed(0);
  const w = decodeWalkOut(out);
  console.log(`3. read from outside in ${us} us: ${w.count} tasks, sum(pid)=${w.sumPid}, first comm "${w.firstComm}", page-crossing u64 0x${w.crossing.toString(16)}`);
  console.log(`   ${stats.accesses} guest accesses, TLB hit ratio ${(stats.tlbHitRatio * 100).toFixed(1)}%, ${stats.walks} page walks, ${stats.bounced} page-crossing reads`);

  console.log('4. a hostile guest: the 10th task now points to itself; the unbounded walk must be stopped');
  const bad = Buffer.from(world.guest.mem);
  const t = world.taskAddrs[9] + 32n;
  bad.writeBigUInt64LE(t, Number(world.guest.virtToPhys(t)));
  writeFileSync(mem, bad);
  try {
    rt.call('ciel_mon_walk_unbounded', Buffer.alloc(8), null, 1_000_000);
  } catch (e) {
    if (!(e instanceof GuestFaultError)) throw e;
    console.log(`   contained: ${e.message}`);
  }
  rt.close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
