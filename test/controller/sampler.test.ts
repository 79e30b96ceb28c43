// The controller's container-level sampler over VmSession, without a running guest: the test guest's
// ELF dump (testbed/elf-dump.ts, cached) as a vmcore origin VM. Names from the config, the cost stats,
// samples and failures handed to the Prometheus exporter, re-attach on the next read.
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { VmError } from '../../common/errors.ts';
import { autoscaleTarget, MonitorSampler } from '../../controller/monitor-sampler.ts';
import { PrometheusExporter } from '../../monitor/prometheus.ts';
import { guestDump, RELEASE } from '../../testbed/elf-dump.ts';
import { containerByName } from '../../testbed/guest/containers.ts';

let dump: string;
let sampler: MonitorSampler;
beforeAll(async () => {
  dump = await guestDump();
}, 900_000);
afterEach(async () => {
  await sampler?.close();
});

describe('MonitorSampler (any backend through VmSession)', () => {
  it('samples a vmcore VM with config names, counts its cost, and feeds the exporter', async () => {
    const burner = containerByName('burner');
    sampler = new MonitorSampler();
    const exporter = new PrometheusExporter({ port: 0 });
    sampler.observe(exporter);
    const seen: string[] = [];
    sampler.onSample = (s) => seen.push(s.vm!);
    await sampler.attach({ name: 'origin', backend: 'vmcore', vmcore: dump }, { names: { [burner.id]: 'burn' } });
    await expect(sampler.attach({ name: 'origin', backend: 'vmcore', vmcore: dump })).rejects.toThrow(/^origin: is already attached$/);

    const s = await sampler.sample('origin');
    expect(s.vm).toBe('origin');
    expect(s.kernel).toBe(RELEASE);
    expect(s.pause_us).toBeUndefined(); // a dump cannot pause (and need not)
    expect(s.containers.find((c) => c.id === burner.id)?.name).toBe('burn');
    const b = await sampler.baseline('origin');
    expect(b.containers).toEqual(s.containers);
    expect(sampler.stats.samples).toBe(2);
    expect(sampler.stats.pausedUs).toBe(0);
    expect(seen).toEqual(['origin', 'origin']);

    // the session went away under the sampler (closed, as after a detach): the next read attaches again
    await sampler.session('origin')!.close();
    expect((await sampler.sample('origin')).containers).toEqual(s.containers);
    expect(sampler.session('origin')!.attaches).toBe(2);

    const text = await exporter.metrics();
    const cpu = new RegExp(`^container_cpu_usage_seconds_total\\{id="${burner.cgroup.replace(/[/.]/g, '\\$&')}",name="burn",image="",vm="origin",cpu="total"\\} (\\S+)$`, 'm').exec(text);
    expect(Number(cpu?.[1])).toBe(s.containers.find((c) => c.id === burner.id)!.cpu_usage_ns / 1e9);
    expect(text).toMatch(/^ciel_sample_duration_seconds_count\{vm="origin"\} 3$/m);
  });

  it('an origin VM that cannot be attached: VmError naming it, counted by the exporter; unknown VMs name themselves', async () => {
    sampler = new MonitorSampler();
    const exporter = new PrometheusExporter({ port: 0 });
    sampler.observe(exporter);
    const target = autoscaleTarget({ name: 'web-vm', kernel: RELEASE, qmp: '/nonexistent/web.qmp', memory: '/nonexistent/web.ram' });
    expect(target).toEqual({ name: 'web-vm', backend: 'qemu', kernel: RELEASE, qmp: '/nonexistent/web.qmp', memory: '/nonexistent/web.ram' });
    const e = await sampler.attach(target).then(() => null, (x: unknown) => x);
    expect(e).toBeInstanceOf(VmError);
    expect((e as VmError).message).toMatch(/^web-vm: cannot attach: \/nonexistent\/web\.ram: guest memory file missing/);
    expect(await exporter.metrics()).toMatch(/^ciel_sample_errors_total\{vm="web-vm"\} 1$/m);
    await expect(sampler.sample('nope')).rejects.toThrow(/^nope: is not attached to the monitor$/);
  });
});
