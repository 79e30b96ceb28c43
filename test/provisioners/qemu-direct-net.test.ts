// Replica VMs on a bridge inside a network namespace the test creates (nothing touches the host's own
// network): QEMU runs under `ip netns exec`, creates its tap there and a script puts it on the bridge.
// Each guest brings up its e1000 NIC with the address from its cmdline and serves HTTP, which is what a
// load balancer (IPVS in a guest on the same bridge) needs from a replica.

import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cacheDir } from '../../common/cache.ts';
import { ensureTestGuest, type TestGuest } from '../../testbed/minimal-guest.ts';
import type { Vm, VmSpec } from '../../provisioners/provisioner.ts';
import { QemuDirectProvisioner } from '../../provisioners/qemu-direct.ts';

const NS = `ciel-pt-${process.pid}`;
const dir = cacheDir('provisioner-test', 'qemu-net');
const inNs = (...args: string[]) => execa('ip', ['netns', 'exec', NS, ...args]);
let guest: TestGuest;
let prov: QemuDirectProvisioner;
const taps = new Map<string, string>();
const tapOf = (vm: Vm) => {
  if (!taps.has(vm.name)) taps.set(vm.name, `ctap${taps.size}`);
  return taps.get(vm.name)!;
};

beforeAll(async () => {
  guest = await ensureTestGuest();
  await execa('ip', ['netns', 'add', NS]);
  await execa('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
  await execa('ip', ['-n', NS, 'link', 'add', 'br0', 'type', 'bridge']);
  await execa('ip', ['-n', NS, 'addr', 'add', '10.77.0.1/24', 'dev', 'br0']);
  await execa('ip', ['-n', NS, 'link', 'set', 'br0', 'up']);
  const ifup = join(dir, 'ifup.sh');
  writeFileSync(ifup, '#!/bin/sh\nip link set "$1" master br0\nip link set "$1" up\n');
  chmodSync(ifup, 0o755);
  prov = new QemuDirectProvisioner({
    template: guest.template,
    dir,
    wrapper: ['ip', 'netns', 'exec', NS],
    extraArgs: (vm, mac) => ['-netdev', `tap,id=n0,ifname=${tapOf(vm)},script=${ifup},downscript=no`, '-device', `e1000,netdev=n0,mac=${mac}`],
    netStats: async (vm) => {
      const r = await inNs('cat', `/sys/class/net/${tapOf(vm)}/statistics/rx_bytes`, `/sys/class/net/${tapOf(vm)}/statistics/tx_bytes`);
      const [tapRx, tapTx] = r.stdout.trim().split('\n').map(Number);
      return { rx_bytes: tapTx!, tx_bytes: tapRx! }; // the tap receives what the guest sends
    },
  });
}, 120_000);

afterAll(async () => {
  await prov?.close();
  await execa('ip', ['netns', 'del', NS]).catch(() => {});
});

const spec = (name: string, ip: string): VmSpec => ({
  name,
  container: 'web',
  vcpus: 1,
  memMiB: 256,
  kernel: guest.kernel,
  initrd: guest.initrd,
  cmdline: guest.cmdline('web', { ip }),
  disk: 'overlay',
});

describe('QEMU-direct replicas on a bridge in a network namespace', () => {
  it('two replicas boot, get their addresses and serve HTTP on the bridge', { timeout: 240_000 }, async () => {
    const a = await prov.acquire(spec('ciel-net-web-1', '10.77.0.2/24'));
    const b = await prov.acquire(spec('ciel-net-web-2', '10.77.0.3/24'));
    expect([a.pooled, b.pooled]).toEqual([false, false]);
    // QEMU kept the PID through `ip netns exec` (it execs), so /proc stats still work
    expect((await execa('cat', [`/proc/${a.vm.pid}/comm`])).stdout).toMatch(/^qemu-system/);
    const before = await prov.vmStats(a.vm);
    const get = async (ip: string) => (await inNs('curl', '-s', '--max-time', '10', '--retry', '5', '--retry-connrefused', `http://${ip}/`)).stdout.trim();
    expect(await get('10.77.0.2')).toBe('web 10.77.0.2');
    expect(await get('10.77.0.3')).toBe('web 10.77.0.3');
    const after = await prov.vmStats(a.vm);
    expect(after.net_tx_bytes).toBeGreaterThan(before.net_tx_bytes);
    expect(after.net_rx_bytes).toBeGreaterThan(before.net_rx_bytes);
    // pause → the replica stops answering; resume → it answers again (pool round trip)
    await prov.release(b.vm, 'pause');
    await expect(inNs('curl', '-s', '--max-time', '2', 'http://10.77.0.3/')).rejects.toThrow();
    const again = await prov.acquire(spec('ciel-net-web-3', '10.77.0.3/24'));
    expect(again).toMatchObject({ pooled: true, reuse: 'resume' });
    expect(await get('10.77.0.3')).toBe('web 10.77.0.3');
    console.log(`qemu-direct+netns: boot_ms ${Math.round(a.boot_ms)} / ${Math.round(b.boot_ms)}, resume_ms ${again.boot_ms.toFixed(1)}`);
  });
});
