// The parts `ciel autoscale` puts around the Autoscaler (controller/hook-balancer.ts, dry-run.ts,
// replica-addresses.ts, replica-provisioner.ts) and its human-readable event lines
// (controller/event-lines.ts). No VM needed.
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DryRunProvisioner } from '../../controller/dry-run.ts';
import { HookBalancer } from '../../controller/hook-balancer.ts';
import { ReplicaAddresses } from '../../controller/replica-addresses.ts';
import { replicaSpec } from '../../controller/replica-provisioner.ts';
import type { ReplicaProvisionerConfig } from '../../controller/config.ts';
import type { ControllerEvent } from '../../controller/types.ts';
import { EventLines } from '../../controller/event-lines.ts';

const dir = mkdtempSync(join(tmpdir(), 'ciel-autoscale-parts-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function hook(body: string): string {
  const f = join(dir, `hook-${Math.random().toString(36).slice(2)}.sh`);
  writeFileSync(f, `#!/bin/sh\n${body}\n`);
  chmodSync(f, 0o755);
  return f;
}

describe('HookBalancer', () => {
  it('runs HOOK add|remove SERVICE VM ADDRESS', async () => {
    const log = join(dir, 'calls.log');
    const lb = new HookBalancer(hook(`echo "$@" >> ${log}`), (b) => (b.vm === 'ciel-web-1' ? '10.0.0.5' : undefined));
    await lb.addBackend('web', { vm: 'ciel-web-1', container: 'web' });
    await lb.addBackend('db', { vm: 'ciel-db-2', container: 'db' });
    await lb.removeBackend('web', { vm: 'ciel-web-1', container: 'web', address: '10.0.0.9' });
    expect(readFileSync(log, 'utf8')).toBe('add web ciel-web-1 10.0.0.5\nadd db ciel-db-2 -\nremove web ciel-web-1 10.0.0.9\n');
  });

  it('an exit status other than 0 is an error naming the command, the status and what it said', async () => {
    const h = hook('echo "no such pool" >&2; exit 3');
    await expect(new HookBalancer(h).addBackend('web', { vm: 'r1', container: 'web' })).rejects.toThrow(`balancer hook \`${h} add web r1 -\`: exit status 3: no such pool`);
  });

  it('a hook that hangs is killed after the timeout', async () => {
    const h = hook('sleep 5');
    await expect(new HookBalancer(h, undefined, 200).removeBackend('web', { vm: 'r1', container: 'web' })).rejects.toThrow(`balancer hook \`${h} remove web r1 -\`: no exit within 200 ms`);
  });
});

describe('replicas', () => {
  const p: ReplicaProvisionerConfig = { kind: 'qemu-direct', template: '/t.qcow2', kernel: '/k', initrd: '/i', cmdline: 'console=ttyS0 ciel.container={container}', vcpus: 1, memMiB: 256, disk: 'overlay' };

  it('replicaSpec fills {container} in the cmdline and the ready line', () => {
    expect(replicaSpec(p, 'web', 'ciel-web-1')).toEqual({ name: 'ciel-web-1', container: 'web', vcpus: 1, memMiB: 256, kernel: '/k', initrd: '/i', cmdline: 'console=ttyS0 ciel.container=web', disk: 'overlay' });
    expect(replicaSpec({ ...p, ready: 'up: {container}' }, 'db', 'x').ready).toBe('up: db');
    expect(replicaSpec({ ...p, ready: null }, 'db', 'x').ready).toBeNull();
  });

  it('ReplicaAddresses: first free address, a paused pooled replica keeps its own, exhaustion is an error', () => {
    const a = new ReplicaAddresses(['10.0.0.20/24', '10.0.0.21/24']);
    const pa = { ...p, cmdline: `${p.cmdline} ip={ip}`, addresses: a.entries as string[] };
    const web1 = a.forSpec('ciel-web-1', 'web', []);
    expect(replicaSpec(pa, 'web', 'ciel-web-1', web1).cmdline).toBe('console=ttyS0 ciel.container=web ip=10.0.0.20/24');
    a.taken('ciel-web-1', 'ciel-web-1-run');
    expect(a.address('ciel-web-1-run')).toBe('10.0.0.20');
    // db gets the next free one
    expect(a.forSpec('ciel-db-2', 'db', [])).toBe('10.0.0.21/24');
    a.taken('ciel-db-2', 'ciel-db-2-run');
    // web's replica went back to the pool paused: the next web spec carries its address, so the pool resumes it
    const pooled = [{ name: 'ciel-web-1-run', spec: replicaSpec(pa, 'web', 'ciel-web-1', web1), state: 'paused' as const, disk: '', serialLog: '' }];
    expect(a.forSpec('ciel-web-3', 'web', pooled)).toBe('10.0.0.20/24');
    // a second web replica while the first runs: none left
    expect(() => a.forSpec('ciel-web-4', 'web', [])).toThrow('no free replica address: all 2 of provisioner.addresses are held by replicas of this run');
  });

  it('ReplicaAddresses: two containers scaling at once (neither VM made yet) get different addresses', () => {
    const a = new ReplicaAddresses(['10.0.0.20/24', '10.0.0.21/24']);
    expect([a.forSpec('ciel-web-1', 'web', []), a.forSpec('ciel-batch-2', 'batch', [])]).toEqual(['10.0.0.20/24', '10.0.0.21/24']);
  });

  it('the dry-run provisioner records and starts nothing', async () => {
    const d = new DryRunProvisioner();
    const a = await d.acquire(replicaSpec(p, 'web', 'ciel-web-1'));
    expect(a).toMatchObject({ pooled: false, clone_ms: 0, boot_ms: 0, vm: { name: 'ciel-web-1', state: 'running', disk: '' } });
    await d.release(a.vm);
    expect(a.vm.state).toBe('paused');
    expect(d.actions.map(({ time: _, ...x }) => x)).toEqual([
      { op: 'start', vm: 'ciel-web-1', container: 'web' },
      { op: 'release', vm: 'ciel-web-1', container: 'web', mode: 'pause' },
    ]);
  });
});

describe('EventLines', () => {
  const T = '2025-01-01T12:00:00.000Z';
  const lines = (evs: ControllerEvent[], dry = false) => {
    const v = new EventLines(dry);
    return evs.map((e) => v.line(e)?.replace(/^\S+ {2}/, '')).filter((l) => l !== undefined);
  };

  it('one line per interesting event, repeats dropped', () => {
    const hot: ControllerEvent = { type: 'vm_hot', time: T, vm: 'vm1', resource: 'cpu', value: 0.52, threshold: 0.35 };
    const chosen: ControllerEvent = { type: 'container_chosen', time: T, vm: 'vm1', container: 'web', rule: 'over_threshold', resource: 'cpu', score: 1.56 };
    const err: ControllerEvent = { type: 'error', time: T, where: 'vm_stats', vm: 'vm1', error: 'ENOENT' };
    expect(
      lines([
        { type: 'vm_check', time: T, vm: 'vm1', util: { cpu: 0.52 }, elapsed_ms: 200 },
        hot,
        chosen,
        hot,
        chosen,
        { type: 'decision', time: T, action: 'scale_out', vm: 'vm1', container: 'web', from: 1, to: 2, reason: 'over_threshold: cpu 0.7 vs target 0.4 (ratio 1.75)', resource: 'cpu', metric: 0.7, target: 0.4 },
        { type: 'scaled_out', time: T, container: 'web', replica: 'ciel-web-1', pooled: false, clone_ms: 120.4, boot_ms: 9000 },
        { type: 'vm_cool', time: T, vm: 'vm1' },
        err,
        err,
        { type: 'vm_check', time: T, vm: 'vm1', util: {}, elapsed_ms: null },
        err,
      ]),
    ).toEqual([
      '▲ VM vm1 hot: cpu 52% > 35% (VM level)',
      '● chosen in vm1: web (over its threshold, cpu at 1.56× it)',
      '■ DECISION scale out web 1 → 2 (over_threshold: cpu 0.7 vs target 0.4 (ratio 1.75))',
      '✔ replica ciel-web-1 serves web (new clone; clone 120 ms, boot 9000 ms)',
      '▽ VM vm1 cool again',
      '✖ vm1: VM-level stats failed: ENOENT',
      '✖ vm1: VM-level stats failed: ENOENT',
    ]);
  });

  it('a dry run says what it would have done', () => {
    expect(
      lines(
        [
          { type: 'scaled_out', time: T, container: 'web', replica: 'ciel-web-1', pooled: false, clone_ms: 0, boot_ms: 0 },
          { type: 'scaled_in', time: T, container: 'web', replica: 'ciel-web-1' },
        ],
        true,
      ),
    ).toEqual(['✔ dry run: would start replica ciel-web-1 for web', '✔ dry run: would drain replica ciel-web-1 of web and return it to the pool']);
  });
});
