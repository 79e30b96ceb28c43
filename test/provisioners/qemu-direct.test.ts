// End-to-end: clone from a template, boot a minimal guest to its ready line, return it to the pool,
// reuse it (resume from pause, and boot a stopped one for another container). Real QEMU (TCG).

import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cacheDir } from '../../common/cache.ts';
import { ensureTestGuest, type TestGuest } from '../../testbed/minimal-guest.ts';
import type { VmSpec } from '../../provisioners/provisioner.ts';
import { QemuDirectProvisioner } from '../../provisioners/qemu-direct.ts';
import { QmpClient } from '../../vmi/qmp.ts';

let guest: TestGuest;
let prov: QemuDirectProvisioner;
const timings: Record<string, number> = {};

const spec = (name: string, container: string, disk: VmSpec['disk'] = 'overlay'): VmSpec => guest.spec(name, container, { disk });

beforeAll(async () => {
  guest = await ensureTestGuest();
  prov = new QemuDirectProvisioner({ template: guest.template, dir: cacheDir('provisioner-test', 'qemu-direct') });
});

afterAll(async () => {
  await prov?.close();
  console.log(`qemu-direct timings (ms): ${JSON.stringify(timings)}`);
});

describe('QEMU-direct provisioner', () => {
  it('clones (qcow2 overlay), boots to CIEL-READY, pools and reuses', { timeout: 240_000 }, async () => {
    const a = await prov.acquire(spec('ciel-qd-web-1', 'web'));
    expect(a.pooled).toBe(false);
    expect(a.vm.state).toBe('running');
    expect(readFileSync(a.vm.serialLog, 'latin1')).toContain('CIEL-READY web');
    const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', '-U', a.vm.disk])).stdout) as { 'backing-filename'?: string };
    expect(info['backing-filename']).toBe(guest.template);
    expect(a.vm.ramFile && existsSync(a.vm.ramFile)).toBe(true);
    // guest memory is private: the RAM file (QEMU makes it 0644) and the overlay, QMP and control
    // sockets sit in folders only their owner can enter
    expect(statSync(dirname(a.vm.ramFile!)).mode & 0o777).toBe(0o700);
    expect(dirname(a.vm.ramFile!)).toBe(`/dev/shm/ciel-${process.getuid!()}`);
    expect(statSync(dirname(a.vm.disk)).mode & 0o777).toBe(0o700);
    // a second QMP socket is free for `ciel monitor` while the provisioner holds the first
    expect(a.vm.monitorQmp).toMatch(/\/ciel-qd-web-1\.monitor\.qmp$/);
    const userQmp = await QmpClient.connect(a.vm.monitorQmp!, 5000);
    expect((await userQmp.queryStatus()).running).toBe(true);
    userQmp.close();
    timings.clone_ms = Math.round(a.clone_ms);
    timings.boot_ms = Math.round(a.boot_ms);

    // VM-level stats from /proc/<pid> and QMP: cpu time grows while the guest runs
    const s1 = await prov.vmStats(a.vm);
    await new Promise((r) => setTimeout(r, 1000));
    const s2 = await prov.vmStats(a.vm);
    expect(s1.cpu_time_ns).toBeGreaterThan(1e9); // booting under TCG costs seconds of CPU
    expect(s2.cpu_time_ns).toBeGreaterThanOrEqual(s1.cpu_time_ns);
    expect(s2.memory_total_bytes).toBe(256 * 1024 * 1024);
    expect(s2.memory_used_bytes).toBeGreaterThan(0);

    // back to the pool, paused; the next acquire for the same container resumes it
    await prov.release(a.vm, 'pause');
    expect(await prov.runState(a.vm)).toBe('paused');
    expect(prov.pooled().map((v) => [v.name, v.state])).toEqual([['ciel-qd-web-1', 'paused']]);
    const b = await prov.acquire(spec('ciel-qd-web-2', 'web'));
    expect(b).toMatchObject({ pooled: true, reuse: 'resume', clone_ms: 0 });
    expect(b.vm).toBe(a.vm);
    expect(b.vm.state).toBe('running');
    timings.pool_resume_ms = Math.round(b.boot_ms);
    expect(b.boot_ms).toBeLessThan(1000);
    expect(await prov.runState(b.vm)).toBe('running');

    // stopped in the pool: reused for another container, booted with its cmdline, no clone
    await prov.release(b.vm, 'stop');
    expect(prov.pooled().map((v) => v.state)).toEqual(['stopped']);
    const c = await prov.acquire(spec('ciel-qd-api-1', 'api'));
    expect(c).toMatchObject({ pooled: true, reuse: 'boot', clone_ms: 0 });
    expect(c.vm.name).toBe('ciel-qd-web-1');
    expect(readFileSync(c.vm.serialLog, 'latin1')).toContain('CIEL-READY api');
    timings.pool_boot_ms = Math.round(c.boot_ms);
    await prov.destroy(c.vm);
    expect(existsSync(c.vm.disk)).toBe(false);
  });

  it('sparse-copy clone: a standalone copy with no backing file', { timeout: 60_000 }, async () => {
    const { vm, clone_ms } = await prov.cloneFromTemplate(spec('ciel-qd-sparse', 'web', 'sparse-copy'));
    timings.sparse_clone_ms = Math.round(clone_ms);
    const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', vm.disk])).stdout) as { 'backing-filename'?: string };
    expect(info['backing-filename']).toBeUndefined();
    expect(statSync(vm.disk).size).toBe(statSync(guest.template).size);
    await prov.destroy(vm);
  });
});
