// Warm start vs cold boot (QEMU-direct, TCG), on a private L2 segment: a booted minimal VM in warm mode
// (modules loaded, NIC up, no identity) is saved once with QEMU `migrate "exec:cat > FILE"`; two new VMs
// are restored from that one file with `-incoming "exec:cat FILE"` and get their own identity over the
// control channel (MAC, address, the container to run). Both serve HTTP under their own names; the time
// from launch to serving is compared with a cold boot of the same guest.

import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cacheDir } from '../../common/cache.ts';
import { L2Segment } from '../../testbed/lb/netns.ts';
import { ensureTestGuest, type TestGuest } from '../../testbed/minimal-guest.ts';
import type { VmSpec } from '../../provisioners/provisioner.ts';
import { QemuDirectProvisioner } from '../../provisioners/qemu-direct.ts';
import type { WarmImage } from '../../provisioners/warm-identity.ts';

const dir = cacheDir('provisioner-test', 'warm');
let guest: TestGuest;
let net: L2Segment;
let prov: QemuDirectProvisioner;
const t: Record<string, unknown> = {};

const spec = (name: string, container: string, cmdline: string, ready?: string): VmSpec => ({
  name,
  container,
  vcpus: 1,
  memMiB: 192,
  kernel: guest.kernel,
  initrd: guest.initrd,
  cmdline,
  disk: 'overlay',
  ...(ready ? { ready } : {}),
});

/** ms from `t0` until the address answers HTTP with `want` (polling from inside the namespace). */
async function serving(ip: string, want: string, t0: number): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const r = await net.exec('curl', ['-s', '--max-time', '2', `http://${ip}/`], { reject: false });
    if (r.stdout.trim() === want) return performance.now() - t0;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error(`${ip} never served ${want}`);
}

beforeAll(async () => {
  guest = await ensureTestGuest();
  net = new L2Segment({ dir, ns: `ciel-ws-${process.pid}` });
  await net.create();
  prov = new QemuDirectProvisioner({ template: guest.template, dir, wrapper: net.wrapper, extraArgs: (vm, mac) => net.nicArgs(vm, mac) });
}, 120_000);

afterAll(async () => {
  console.log(`warm-start: ${JSON.stringify(t)}`);
  await prov?.close();
  await net?.destroy();
});

describe('warm start (restore a saved memory image) vs cold boot', () => {
  it('restores two clones from one image, fixes up their identity, and serves sooner than a cold boot', { timeout: 400_000 }, async () => {
    // cold boot: launch → ready line (httpd listening) → HTTP answered
    let t0 = performance.now();
    const cold = await prov.acquire(spec('ciel-ws-cold', 'web', guest.cmdline('web', { ip: '10.77.0.2/24' })));
    const coldServe = await serving('10.77.0.2', 'web 10.77.0.2', t0);
    t.cold_boot_ms = Math.round(cold.boot_ms);
    t.cold_serving_ms = Math.round(coldServe);
    await prov.destroy(cold.vm);

    // the warm image: boot once in warm mode, save its memory, throw the VM away
    const tpl = await prov.acquire(spec('ciel-ws-tpl', 'warm', guest.cmdline('none', { warm: true }), 'CIEL-WARM-READY'));
    t.template_boot_ms = Math.round(tpl.boot_ms);
    const file = join(dir, 'warm-192M.mig');
    const saved = await prov.saveWarmImage(tpl.vm, file);
    t.save_ms = Math.round(saved.save_ms);
    t.image_bytes = saved.bytes;
    expect(saved.bytes).toBeGreaterThan(1e6);
    expect(await prov.runState(tpl.vm)).toBe('postmigrate');
    await prov.destroy(tpl.vm);
    const image: WarmImage = saved.image;

    // two clones from the same image, each with its own identity
    const clones = [
      { name: 'ciel-ws-web-1', container: 'web', ip: '10.77.0.3' },
      { name: 'ciel-ws-api-1', container: 'api', ip: '10.77.0.4' },
    ];
    const warm: Record<string, number>[] = [];
    for (const c of clones) {
      t0 = performance.now();
      const a = await prov.warmStart(spec(c.name, c.container, ''), image, { ip: `${c.ip}/24` });
      const serve = await serving(c.ip, `${c.container} ${c.ip}`, t0);
      warm.push({ clone_ms: Math.round(a.clone_ms), restore_ms: Math.round(a.restore_ms), fixup_ms: Math.round(a.fixup_ms), boot_ms: Math.round(a.boot_ms), serving_ms: Math.round(serve) });
      expect(a.vm.state).toBe('running');
      expect(readFileSync(a.vm.serialLog, 'latin1')).toContain(`CIEL-READY ${c.container}`);
      // its NIC carries this VM's own MAC (the snapshot's was the template's), its cgroup its container
      const id = await prov.exec(a.vm, 'cat /sys/class/net/eth0/address; ls -d /sys/fs/cgroup/*/ | xargs -n1 basename');
      const [mac, ...groups] = id.out.trim().split('\n');
      expect(mac).toBe(prov.macOf(a.vm));
      expect(groups).toEqual([c.container]);
      expect(serve).toBeLessThan(coldServe);
    }
    t.warm = warm;
    // both clones are up at the same time on the same segment and answer as themselves
    expect((await net.exec('curl', ['-s', '--max-time', '5', 'http://10.77.0.3/'])).stdout.trim()).toBe('web 10.77.0.3');
    expect((await net.exec('curl', ['-s', '--max-time', '5', 'http://10.77.0.4/'])).stdout.trim()).toBe('api 10.77.0.4');
    t.warm_vs_cold = +(warm[0]!.serving_ms! / coldServe).toFixed(3);

    // the same through acquire(), as the Autoscaler calls it: a provisioner with the warm image restores
    // new VMs (identity from the spec), and a paused pooled VM still comes back first
    const addr = new Map([['ciel-ws-auto-1', '10.77.0.5/24']]);
    const wp = new QemuDirectProvisioner({
      template: guest.template,
      dir,
      wrapper: net.wrapper,
      extraArgs: (vm, mac) => net.nicArgs(vm, mac),
      warm: { image, identity: (s) => (addr.has(s.name) ? { ip: addr.get(s.name) } : undefined) },
    });
    try {
      const a = await wp.acquire(spec('ciel-ws-auto-1', 'web', guest.cmdline('web')));
      expect(a).toMatchObject({ warm: true, pooled: false });
      expect(a.boot_ms).toBeLessThan(cold.boot_ms);
      t.acquire_warm_boot_ms = Math.round(a.boot_ms);
      await serving('10.77.0.5', 'web 10.77.0.5', performance.now());
      // pooled: the warm clone is the spec's VM now (its own cmdline), so the same spec resumes it...
      await wp.release(a.vm, 'pause');
      const b = await wp.acquire(spec('ciel-ws-auto-2', 'web', guest.cmdline('web')));
      expect(b).toMatchObject({ pooled: true, reuse: 'resume' });
      expect(b.vm).toBe(a.vm);
      // ...and stopped, it boots cold as its container (not as the warm template: that never prints CIEL-READY web)
      await wp.release(b.vm, 'stop');
      const c = await wp.acquire(spec('ciel-ws-auto-3', 'web', guest.cmdline('web')));
      expect(c).toMatchObject({ pooled: true, reuse: 'boot' });
      expect(c.vm).toBe(a.vm);
      expect(readFileSync(c.vm.serialLog, 'latin1')).toMatch(/CIEL-READY web/);
    } finally {
      await wp.close();
    }
    rmSync(file, { force: true });
  });
});
