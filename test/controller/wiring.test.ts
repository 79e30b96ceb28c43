// The wiring pieces without VMs: the scale-out timeline from recorded events, replica addresses, /proc VM
// stats (of this very process), the stub balancer's bookkeeping and the SVG plot.

import { describe, expect, it } from 'vitest';
import type { ControllerEvent } from '../../controller/types.ts';
import { addressOf, ProcVmStats, readProcVmStats, timeline, type TimedEvent } from '../../controller/wiring.ts';
import { RoundRobinStubBalancer } from '../../testbed/lb-stub.ts';
import { plotSvg } from '../../testbed/plot-svg.ts';

const T = 1_800_000_000_000;
type NoTime<E> = E extends unknown ? Omit<E, 'time'> : never;
const ev = (dt: number, e: NoTime<ControllerEvent>): TimedEvent => ({ at: T + dt, e: { ...e, time: new Date(T + dt).toISOString() } as ControllerEvent });

describe('timeline()', () => {
  const events: TimedEvent[] = [
    ev(-500, { type: 'vm_hot', vm: 'o', resource: 'cpu', value: 0.4, threshold: 0.35 }), // before the crossing: ignored
    ev(120, { type: 'vm_check', vm: 'o', util: { cpu: 0.5 }, elapsed_ms: 100 }),
    ev(120, { type: 'vm_hot', vm: 'o', resource: 'cpu', value: 0.5, threshold: 0.35 }),
    ev(370, { type: 'container_hot', vm: 'o', container: 'web', resource: 'cpu', value: 0.7, threshold: 0.45 }),
    ev(371, { type: 'decision', action: 'scale_out', vm: 'o', container: 'web', from: 1, to: 2, reason: 'r', resource: 'cpu', metric: 0.7, target: 0.4 }),
    ev(12_500, { type: 'scaled_out', container: 'web', replica: 'ciel-web-1', pooled: false, clone_ms: 40.5, boot_ms: 12_000 }),
  ];
  it('splits detect / decide / clone / boot / ready from the crossing', () => {
    const tl = timeline(events, 'web', T)!;
    expect(tl).toMatchObject({ container: 'web', replica: 'ciel-web-1', pooled: false, detect_ms: 120, decide_ms: 251, clone_ms: 40.5, boot_ms: 12_000, ready_ms: 12_500 });
    expect(tl.at).toEqual({ crossed: T, detected: T + 120, decided: T + 371, ready: T + 12_500 });
  });
  it('is undefined until the replica serves, and for other containers', () => {
    expect(timeline(events.slice(0, -1), 'web', T)).toBeUndefined();
    expect(timeline(events, 'db', T)).toBeUndefined();
  });
});

describe('addressOf()', () => {
  it('reads ciel.ip from the kernel command line', () => {
    expect(addressOf({ cmdline: 'console=ttyS0 ciel.container=web ciel.ip=10.77.0.20/24' } as never)).toBe('10.77.0.20');
    expect(addressOf({ cmdline: 'console=ttyS0 ciel.container=web' } as never)).toBeUndefined();
  });
});

describe('VM-level stats from /proc', () => {
  it('reads CPU time and RSS of a process, and falls back for unknown VMs', async () => {
    const a = readProcVmStats({ name: 'me', pid: process.pid, vcpus: 2, memMiB: 512 });
    let x = 0;
    for (let i = 0; i < 3e7; i++) x += i;
    const b = readProcVmStats({ name: 'me', pid: process.pid, vcpus: 2, memMiB: 512 });
    expect(x).toBeGreaterThan(0);
    expect(b.cpu_time_ns).toBeGreaterThan(a.cpu_time_ns);
    expect(b.memory_used_bytes).toBeGreaterThan(1 << 20);
    expect(b.memory_total_bytes).toBe(512 * 2 ** 20);
    const src = new ProcVmStats({ vmStats: async (v) => ({ ...b, vm: String(v) }) }).add({ name: 'me', pid: process.pid, vcpus: 2, memMiB: 512 });
    expect((await src.vmStats('me')).vm).toBe('me');
    expect((await src.vmStats('other')).vm).toBe('other');
    await expect(new ProcVmStats().vmStats('x')).rejects.toThrow(/no VM-level stats source/);
  });
});

describe('RoundRobinStubBalancer', () => {
  it('keeps backends by address and drains them', async () => {
    const lb = new RoundRobinStubBalancer({ ns: 'none', addressOf: (b) => (b.vm === 'r1' ? '10.77.0.20' : undefined) });
    await lb.addBackend('web', { vm: 'r1', container: 'web' });
    await lb.addBackend('web', { vm: 'r1', container: 'web' });
    expect(lb.list('web')).toEqual([{ service: 'web', address: '10.77.0.20', vm: 'r1' }]);
    await expect(lb.addBackend('web', { vm: 'r2', container: 'web' })).rejects.toThrow(/no address/);
    await lb.removeBackend('web', { vm: 'r1', container: 'web' });
    expect(lb.list()).toEqual([]);
    expect(await lb.drive('web', 3)).toEqual({});
  });
});

describe('plotSvg()', () => {
  it('draws series, markers and a legend as well-formed SVG', () => {
    const svg = plotSvg({
      title: 'a <b> & c',
      xLabel: 't',
      yLabel: 'cpu',
      series: [
        { name: 'web', points: [[0, 5], [1, 90], [2, 140]] },
        { name: 'db', points: [[0, 8], [1, 8]] },
      ],
      markers: [{ x: 1.5, label: 'decision' }],
      hlines: [{ y: 90, label: 'threshold' }],
    });
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('a &lt;b&gt; &amp; c');
    expect(svg.match(/<path /g)).toHaveLength(2);
    expect(svg).toContain('>decision<');
    expect(svg).toContain('>web<');
    expect(svg.trim().endsWith('</svg>')).toBe(true);
  });
});
