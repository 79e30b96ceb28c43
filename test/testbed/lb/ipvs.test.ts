// IPVS direct routing in a load-balancer VM, end to end on a private L2 segment (a bridge in a network
// namespace this test creates; nothing leaves it): an LB VM owns the VIP, backend VMs (the test guest with
// `ciel.vip=`) hold it on lo and answer the client directly. An HTTP load from inside the namespace to the
// VIP is split across the backends — counted three ways that must agree: by the response bodies (each
// backend names itself), by the requests each backend logged, and by IPVS's own per-real-server
// connection counts (counts()). Then a third backend is added (scale-out) and receives traffic, and one
// is drained (scale-in): a connection open on it is allowed to finish, then it gets nothing new.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cacheDir } from '../../../common/cache.ts';
import { IpvsVmBalancer } from '../../../testbed/lb/ipvs-vm.ts';
import { L2Segment } from '../../../testbed/lb/netns.ts';
import { ensureTestGuest, type TestGuest } from '../../../testbed/minimal-guest.ts';
import type { Vm, VmSpec } from '../../../provisioners/provisioner.ts';
import { QemuDirectProvisioner } from '../../../provisioners/qemu-direct.ts';

const VIP = '10.77.0.100';
const dir = cacheDir('lb', 'test');
let guest: TestGuest;
let net: L2Segment;
let lb: IpvsVmBalancer;
let prov: QemuDirectProvisioner;
const backends: { vm: Vm; ip: string }[] = [];
const report: Record<string, unknown> = {};

const spec = (name: string, ip: string): VmSpec => ({
  name,
  container: 'web',
  vcpus: 1,
  memMiB: 192,
  kernel: guest.kernel,
  initrd: guest.initrd,
  cmdline: guest.cmdline('web', { ip: `${ip}/24`, vip: VIP }),
  disk: 'overlay',
});

/** n sequential HTTP/1.1 requests (one connection each) from the namespace to the VIP; body → count. */
async function load(n: number): Promise<Record<string, number>> {
  // a real client retries: under TCG on a loaded host an emulated NIC can drop a SYN now and then
  const r = await net.exec('sh', ['-c', `i=0; while [ $i -lt ${n} ]; do curl -s --max-time 15 --retry 2 --retry-all-errors http://${VIP}/ || echo FAIL; i=$((i+1)); done`], { timeoutMs: 400_000 });
  const by: Record<string, number> = {};
  for (const line of r.stdout.split('\n').filter(Boolean)) by[line.trim()] = (by[line.trim()] ?? 0) + 1;
  return by;
}

/** Requests each backend logged itself (busybox httpd's log, read over the control channel). */
async function served(): Promise<Record<string, number>> {
  const res: Record<string, number> = {};
  for (const b of backends) res[b.ip] = Number((await prov.exec(b.vm, 'ciel-count web')).out.trim());
  return res;
}

const body = (ip: string) => `web ${ip}`;
/** Round robin gives each of k backends n/k requests; a retried request may shift one or two. */
function expectEvenSplit(by: Record<string, number>, ips: string[], n: number) {
  expect(by.FAIL).toBeUndefined();
  expect(ips.reduce((s, ip) => s + (by[body(ip)] ?? 0), 0)).toBe(n);
  for (const ip of ips) expect(Math.abs((by[body(ip)] ?? 0) - n / ips.length), `${ip}: ${JSON.stringify(by)}`).toBeLessThanOrEqual(2);
}
const diff = (a: Record<string, number>, b: Record<string, number>) => Object.fromEntries(Object.keys(a).map((k) => [k, a[k]! - (b[k] ?? 0)]));

beforeAll(async () => {
  guest = await ensureTestGuest();
  net = new L2Segment({ dir, ns: `ciel-lbt-${process.pid}` });
  await net.create();
  lb = new IpvsVmBalancer({ segment: net, cidr: '10.77.0.10/24', vip: VIP, dir, name: `ciel-lb-t${process.pid}` });
  prov = new QemuDirectProvisioner({ template: guest.template, dir, wrapper: net.wrapper, extraArgs: (vm, mac) => net.nicArgs(vm, mac) });
  const [l, a, b] = await Promise.all([
    lb.start(),
    prov.acquire(spec('ciel-lbt-web-1', '10.77.0.2')),
    prov.acquire(spec('ciel-lbt-web-2', '10.77.0.3')),
  ]);
  report.lb_boot_ms = Math.round(l.boot_ms);
  report.backend_boot_ms = [Math.round(a.boot_ms), Math.round(b.boot_ms)];
  backends.push({ vm: a.vm, ip: '10.77.0.2' }, { vm: b.vm, ip: '10.77.0.3' });
}, 300_000);

afterAll(async () => {
  console.log(`ipvs-vm: ${JSON.stringify(report)}`);
  await prov?.close();
  await lb?.close();
  await net?.destroy();
});

describe('IPVS (direct routing) in a load-balancer VM', () => {
  it('splits an HTTP load to the VIP across two backends', { timeout: 180_000 }, async () => {
    for (const b of backends) await lb.addBackend('web', { vm: b.vm.name, container: 'web', address: b.ip });
    const rs = await lb.realServers();
    expect(rs.map((r) => [r.address, r.weight])).toEqual([
      ['10.77.0.2', 1],
      ['10.77.0.3', 1],
    ]);
    const s0 = await served();
    const by = await load(40);
    report.split_2 = by;
    expectEvenSplit(by, ['10.77.0.2', '10.77.0.3'], 40);
    // the backends counted the same requests they answered
    expect(diff(await served(), s0)).toEqual({ '10.77.0.2': by[body('10.77.0.2')], '10.77.0.3': by[body('10.77.0.3')] });
    const c = await lb.counts();
    report.ipvs_counts_2 = c;
    // IPVS counted at least those (a retried connection attempt counts too)
    expect(c['10.77.0.2:80']).toBeGreaterThanOrEqual(by[body('10.77.0.2')]);
    expect(c['10.77.0.3:80']).toBeGreaterThanOrEqual(by[body('10.77.0.3')]);
  });

  it('scale-out: a third backend added to the balancer receives its share', { timeout: 180_000 }, async () => {
    const t = await prov.acquire(spec('ciel-lbt-web-3', '10.77.0.4'));
    report.backend3_boot_ms = Math.round(t.boot_ms);
    backends.push({ vm: t.vm, ip: '10.77.0.4' });
    const t0 = performance.now();
    await lb.addBackend('web', { vm: t.vm.name, container: 'web', address: '10.77.0.4' });
    report.add_backend_ms = Math.round(performance.now() - t0);
    const c0 = await lb.counts();
    const by = await load(30);
    report.split_3 = by;
    expectEvenSplit(by, ['10.77.0.2', '10.77.0.3', '10.77.0.4'], 30);
    const d = diff(await lb.counts(), c0);
    for (const ip of ['10.77.0.2', '10.77.0.3', '10.77.0.4']) expect(d[`${ip}:80`]).toBeGreaterThanOrEqual(by[body(ip)]);
  });

  it('scale-in: drain lets an open connection finish, then the backend gets no new requests', { timeout: 180_000 }, async () => {
    // a client that connects now and sends its request only 3 s later (an in-flight session)
    const slow = net.exec('sh', ['-c', `(sleep 3; printf 'GET / HTTP/1.0\\r\\n\\r\\n') | busybox nc ${VIP} 80`], { timeoutMs: 30_000 });
    // which backend holds it: the one with an established connection from the client to the VIP
    let victim: (typeof backends)[number] | undefined;
    for (let i = 0; i < 40 && !victim; i++) {
      for (const b of backends) {
        const ns = (await prov.exec(b.vm, `netstat -tn | grep '${VIP}:80 .*10.77.0.1:.*ESTABLISHED' || true`)).out;
        if (ns.trim()) victim = b;
      }
    }
    expect(victim).toBeDefined();
    report.ipvs_before_drain = await lb.realServers();
    const others = backends.filter((b) => b !== victim);
    const removing = lb.removeBackendTimed('web', { vm: victim!.vm.name, container: 'web', address: victim!.ip });
    removing.catch(() => {});
    // while it drains (weight 0, connection still open) new requests go to the others only
    await new Promise((r) => setTimeout(r, 300));
    expect((await lb.realServers()).find((r) => r.address === victim!.ip)?.weight).toBe(0);
    const during = await load(10);
    expect(during.FAIL).toBeUndefined();
    expect(during[body(victim!.ip)]).toBeUndefined();
    const slowOut = (await slow).stdout;
    expect(slowOut).toContain(body(victim!.ip)); // the open session was served by the drained backend
    const { drain_ms, timedOut } = await removing;
    report.drain_ms = Math.round(drain_ms);
    expect(timedOut).toBe(false);
    expect(drain_ms).toBeGreaterThan(1500); // it waited for the session
    expect((await lb.realServers()).map((r) => r.address).sort()).toEqual(others.map((b) => b.ip).sort());
    const s0 = await served();
    const after = await load(20);
    report.split_after_drain = after;
    expect(after[body(victim!.ip)]).toBeUndefined();
    expectEvenSplit(after, others.map((b) => b.ip), 20);
    expect((await served())[victim!.ip]).toBe(s0[victim!.ip]);
    // counts() keeps the removed backend's total
    const c = await lb.counts();
    report.ipvs_counts_final = c;
    expect(Object.values(c).reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(40 + 30 + 1 + 10 + 20);
  });
});
