// The live test guest end to end: boot (cgroup v2, then v1), ground truth over the request/response channel,
// QMP registers and stop/cont, the shared-memory backend, and VMCOREINFO/KASLR from physical memory.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GuestStateError, QemuLiveBackend } from '../../vmi/backends/qemu-live.ts';
import { findVmcoreinfo, type VmcoreInfo } from '../../vmi/kaslr.ts';
import { QmpClient } from '../../vmi/qmp.ts';
import { bootGuest, type Guest } from '../../testbed/guest/boot.ts';
import { GUEST_CONTAINERS, LOAD } from '../../testbed/guest/containers.ts';
import type { Truth, TruthContainer } from '../../testbed/guest/truth.ts';

const MiB = 1024 * 1024;
const offsets: bigint[] = [];

const byName = (t: Truth, name: string): TruthContainer => {
  const c = t.containers.find((x) => x.name === name);
  if (!c) throw new Error(`no ${name} in truth`);
  return c;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function expectKnownContainers(t: Truth) {
  expect(t.containers.map((c) => [c.name, c.id, c.cgroup])).toEqual(GUEST_CONTAINERS.map((c) => [c.name, c.id, c.cgroup]));
  for (const c of t.containers) {
    expect(c.id).toMatch(/^[0-9a-f]{64}$/);
    expect(c.cgroup).toMatch(/^\/docker\/[0-9a-f]{64}$|^\/system\.slice\/docker-[0-9a-f]{64}\.scope$/);
    for (const [k, v] of Object.entries(c.raw)) expect(v, `${c.name}.${k}`).not.toBeNull();
  }
}

/** the loads move as the guest set them up, between two readings `t1` then `t2` */
function expectLoads(t1: Truth, t2: Truth) {
  const dtNs = Number(t2.tStartNs - t1.tStartNs);
  expect(dtNs).toBeGreaterThan(0);
  const d = (name: string, f: keyof TruthContainer) => (byName(t2, name)[f] as number) - (byName(t1, name)[f] as number);
  // burner: capped at 0.5 CPU
  const burn = d('burner', 'cpu_usage_ns') / dtNs;
  expect(burn).toBeGreaterThan(0.15);
  expect(burn).toBeLessThan(LOAD.burnerCpuFraction + 0.1);
  expect(d('idle', 'cpu_usage_ns') / dtNs).toBeLessThan(0.05);
  // memfill: 48 MiB in tmpfs (file/cache) + 16 MiB anonymous (anon/rss)
  const mf = byName(t2, 'memfill');
  expect(mf.memory_cache_bytes!).toBeGreaterThanOrEqual(LOAD.memfillFileMiB * MiB);
  expect(mf.memory_rss_bytes!).toBeGreaterThanOrEqual(LOAD.memfillAnonMiB * MiB);
  expect(mf.memory_usage_bytes!).toBeGreaterThanOrEqual((LOAD.memfillFileMiB + LOAD.memfillAnonMiB) * MiB);
  expect(byName(t2, 'idle').memory_usage_bytes!).toBeLessThan(8 * MiB);
  // disk: O_DIRECT writes and reads of 1 MiB per round to /dev/vda, only in the disk container
  const disk2 = byName(t2, 'disk');
  expect(disk2.io_write_bytes!).toBeGreaterThanOrEqual(MiB);
  expect(disk2.io_read_bytes!).toBeGreaterThanOrEqual(MiB);
  expect(d('disk', 'io_write_bytes') + d('disk', 'io_read_bytes')).toBeGreaterThan(0);
  for (const n of ['burner', 'memfill', 'net', 'idle']) expect(byName(t2, n).io_write_bytes, n).toBe(0);
  // net: pings (1000-byte payload, 5/s) from net to netpeer through the root netns
  expect(d('net', 'net_tx_packets')).toBeGreaterThan(0);
  // mostly ~1042-byte echo requests (a few small ARP/ND packets in between)
  expect(d('net', 'net_tx_bytes') / d('net', 'net_tx_packets')).toBeGreaterThan(LOAD.netPingBytes / 2);
  expect(d('netpeer', 'net_rx_packets')).toBeGreaterThan(0);
  expect(byName(t2, 'net').net_tx_bytes!).toBeGreaterThan(10 * byName(t2, 'idle').net_tx_bytes!);
  // processes: burner is a single shell; memfill has its shell's sleep plus dd | sleep
  expect(byName(t2, 'burner').pids).toBe(1);
  expect(byName(t2, 'memfill').pids).toBe(3);
}

function expectVmcoreinfo(info: VmcoreInfo | null, ramBytes: bigint) {
  expect(info).not.toBeNull();
  const v = info!;
  expect(v.osrelease).toBe('6.1.0-56-amd64');
  expect(v.kernelOffset % (2n * 1024n * 1024n)).toBe(0n);
  expect(v.kernelOffset).not.toBe(0n); // KASLR is on (a 0 here would mean a 1-in-~500 draw or a parse bug)
  expect(v.kernelOffset).toBeLessThan(1n << 30n);
  expect(v.pgtableL5).toBe(false); // -cpu qemu64 has no LA57
  expect(v.pageSize).toBe(4096);
  expect(v.phys).toBeLessThan(ramBytes);
  expect(v.initTopPgt).not.toBeNull();
  expect(v.physBase).not.toBeNull();
  // SYMBOL() values include the slide: init_top_pgt sits in the kernel image, above 0xffffffff80000000 + slide
  expect(v.initTopPgt! - 0xffff_ffff_8000_0000n).toBeGreaterThan(v.kernelOffset);
  // _stext links at 0xffffffff81000000 (CONFIG_PHYSICAL_START 16 MiB); when the kernel exports it, it carries the slide
  const stext = v.fields.get("SYMBOL(_stext)");
  if (stext !== undefined) expect(stext).toBe((0xffff_ffff_8100_0000n + v.kernelOffset).toString(16));
}

/** init_top_pgt's physical address from VMCOREINFO: it must look like the kernel's top-level page table. */
function expectInitTopPgt(be: QemuLiveBackend, v: VmcoreInfo) {
  const pgdPhys = v.initTopPgt! - 0xffff_ffff_8000_0000n + v.physBase!;
  expect(pgdPhys % 8192n).toBe(0n);
  expect(pgdPhys).toBeLessThan(be.memorySize());
  const r = be.ranges()[0];
  const pgd = be.view(r, pgdPhys, 4096n);
  const e511 = pgd.readBigUInt64LE(511 * 8); // maps 0xffffff8000000000.. (the kernel image)
  expect(e511 & 1n).toBe(1n); // present
  expect(e511 & 0x000f_ffff_ffff_f000n).toBeLessThan(be.memorySize());
  return pgdPhys;
}

describe('test guest, cgroup v2', () => {
  let g: Guest;
  let be: QemuLiveBackend;
  beforeAll(async () => {
    g = await bootGuest({ mode: 'cgroup2', kaslr: true, memMiB: 512, name: `vt2-${process.pid}` });
    be = await QemuLiveBackend.open({ memFile: g.memFile, qmpSocket: g.qmpSocket, ramBytes: g.memBytes, vm: g.name });
  });
  afterAll(async () => {
    await be?.close();
    await g?.stop();
  });

  it('boots to CIEL-READY', () => {
    console.log(`cgroup2 guest: first console output ${(g.firstOutputMs / 1000).toFixed(1)} s, ready ${(g.bootMs / 1000).toFixed(1)} s`);
    expect(g.bootMs).toBeLessThan(90_000);
    expect(g.alive()).toBe(true);
  });

  it('ground truth: the known containers, and the loads move', async () => {
    const t1 = await g.truth();
    expect(t1.mode).toBe('cgroup2');
    expectKnownContainers(t1);
    expect(t1.tEndNs).toBeGreaterThanOrEqual(t1.tStartNs);
    await sleep(2500);
    const t2 = await g.truth();
    expect(t2.seq).toBeGreaterThan(t1.seq);
    expect(t2.tStartNs).toBeGreaterThan(t1.tEndNs);
    console.log(`truth round trip ${t2.hostReceivedMs - t2.hostSentMs} ms, guest read ${(Number(t2.tEndNs - t2.tStartNs) / 1e6).toFixed(1)} ms`);
    expectLoads(t1, t2);
    expect(byName(t2, 'burner').raw.cpu_usage_usec).toBeGreaterThan(0);
  });

  it('QMP: registers of every vCPU', async () => {
    const { vcpus, ms } = await be.allRegisters();
    console.log(`info registers -a: ${ms.toFixed(1)} ms; CR3 ${vcpus.map((v) => v.cr3Raw.toString(16)).join(' ')}`);
    expect(vcpus.map((v) => v.cpu)).toEqual([0, 1]);
    for (const v of vcpus) {
      expect(v.cr3).toBeGreaterThan(0n);
      expect(v.cr3 % 8192n).toBe(0n); // low 12 bits and the PTI user bit masked
      expect(v.cr3).toBe(v.cr3Raw & 0x000f_ffff_ffff_e000n);
      expect(v.cr3).toBeLessThan(g.memBytes);
      expect(v.cr4 & (1n << 5n)).toBe(1n << 5n); // PAE
      expect(v.cr4 & (1n << 12n)).toBe(0n); // no LA57 on qemu64
    }
    const r = await be.registers();
    expect(r.cr3 % 4096n).toBe(0n);
  });

  it('QMP: a second client is told that another one holds the socket', async () => {
    // `be` holds the guest's only QMP socket; QEMU accepts the second connection but never greets it
    await expect(QmpClient.connect(g.qmpSocket, 1000)).rejects.toThrow(/no greeting within 1000 ms: QMP serves one client at a time, so another client/);
  });

  it('stop/cont: paused guest memory stands still, timed', async () => {
    // compare the kernel image's memory (its .data/.bss hold jiffies, per-CPU stats, ...): where VMCOREINFO says
    // the kernel was loaded (__pa(_text) = 16 MiB + slide + phys_base), 64 MiB or up to the end of RAM
    const ram = be.ranges()[0];
    const info = findVmcoreinfo(be)!;
    const start = 0x100_0000n + info.kernelOffset + info.physBase!;
    expect(start).toBeGreaterThanOrEqual(0n);
    expect(start).toBeLessThan(ram.length);
    const len = start + 64n * 1024n * 1024n > ram.length ? ram.length - start : 64n * 1024n * 1024n;
    const snap = () => Buffer.from(be.view(ram, start, len)); // a copy
    const a = snap();
    await sleep(300);
    expect(a.equals(snap())).toBe(false); // running: kernel data changes all the time
    await be.pause();
    expect((await be.status()).status).toBe('paused');
    const p1 = snap();
    await sleep(300);
    const same = p1.equals(snap());
    await be.resume();
    expect(same).toBe(true);
    expect((await be.status()).status).toBe('running');
    const lp = be.lastPause!;
    console.log(`stop ${lp.stopMs.toFixed(2)} ms, cont ${lp.contMs.toFixed(2)} ms, paused ${lp.pausedMs.toFixed(0)} ms`);
    expect(lp.stopMs).toBeLessThan(500);
    expect(lp.contMs).toBeLessThan(500);
    // the guest carries on after cont
    const t = await g.truth();
    expect(t.containers).toHaveLength(GUEST_CONTAINERS.length);
  });

  it('VMCOREINFO from physical memory gives the release and the KASLR slide', async () => {
    const info = findVmcoreinfo(be);
    expectVmcoreinfo(info, g.memBytes);
    const pgd = expectInitTopPgt(be, info!);
    const { vcpus } = await be.allRegisters();
    console.log(
      `VMCOREINFO at 0x${info!.phys.toString(16)} in ${info!.ms.toFixed(1)} ms: KERNELOFFSET=${info!.kernelOffset.toString(16)} ` +
        `phys_base=${info!.physBase! < 0n ? '-' : ''}0x${(info!.physBase! < 0n ? -info!.physBase! : info!.physBase!).toString(16)} init_top_pgt phys 0x${pgd.toString(16)}, vCPU CR3 ${vcpus.map((v) => v.cr3.toString(16)).join(' ')}`,
    );
    offsets.push(info!.kernelOffset);
  });

  it('clear errors: QMP socket gone, memory file missing', async () => {
    await expect(QmpClient.connect(`${g.runDir}/nope.sock`, 1000)).rejects.toThrow(/socket not there|ENOENT/);
    await expect(QemuLiveBackend.open({ memFile: '/dev/shm/ciel-no-such-guest', qmpSocket: g.qmpSocket })).rejects.toThrow(/memory file missing/);
    await expect(QemuLiveBackend.open({ memFile: g.memFile, qmpSocket: g.qmpSocket, ramBytes: g.memBytes * 2n })).rejects.toThrow(/smaller than/);
  });
});

describe('test guest, cgroup v1', () => {
  let g: Guest;
  let be: QemuLiveBackend;
  beforeAll(async () => {
    g = await bootGuest({ mode: 'cgroup1', kaslr: true, memMiB: 512, name: `vt1-${process.pid}` });
    be = await QemuLiveBackend.open({ memFile: g.memFile, qmpSocket: g.qmpSocket, ramBytes: g.memBytes, vm: g.name });
  });
  afterAll(async () => {
    await be?.close();
    await g?.stop();
  });

  it('ground truth (cgroup v1 files): the known containers, and the loads move', async () => {
    console.log(`cgroup1 guest: ready ${(g.bootMs / 1000).toFixed(1)} s`);
    const t1 = await g.truth();
    expect(t1.mode).toBe('cgroup1');
    expectKnownContainers(t1);
    expect(Object.keys(byName(t1, 'burner').raw)).toContain('cpuacct_usage');
    await sleep(2500);
    const t2 = await g.truth();
    expectLoads(t1, t2);
  });

  it('VMCOREINFO again; KASLR put the kernel somewhere else than in the first boot', () => {
    const info = findVmcoreinfo(be);
    expectVmcoreinfo(info, g.memBytes);
    expectInitTopPgt(be, info!);
    offsets.push(info!.kernelOffset);
    console.log(`KERNELOFFSET boot 1 ${offsets[0]?.toString(16)}, boot 2 ${offsets[1].toString(16)}`);
    expect(offsets).toHaveLength(2);
    expect(offsets[1]).not.toBe(offsets[0]);
  });

  it('stop() removes the process and the shared-memory file; the backend then says the guest is gone', async () => {
    const { existsSync } = await import('node:fs');
    const pid = g.pid;
    await g.stop();
    expect(existsSync(g.memFile)).toBe(false);
    expect(() => process.kill(pid, 0)).toThrow();
    expect(g.alive()).toBe(false);
    await expect(g.truth()).rejects.toThrow(/QEMU exited/);
    await expect(be.registers()).rejects.toBeInstanceOf(GuestStateError);
    await expect(be.pause()).rejects.toThrow(/shutdown|gone/);
    await be.close();
    expect(() => be.ranges()).toThrow(/closed/);
  });
});
