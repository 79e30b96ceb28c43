import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { Autoscaler, jsonLines, type AutoscalerOptions, type Backend, type LoadBalancer } from '../../controller/autoscaler.ts';
import { PolicyEngine } from '../../controller/policy.ts';
import type { ControllerEvent, VmStats } from '../../controller/types.ts';
import type { Acquired, ReleaseMode, Vm, VmSpec } from '../../provisioners/provisioner.ts';
import { pickFromPool } from '../../provisioners/provisioner.ts';
import type { Sample } from '../../vmi/sample.ts';
import { ContainerSeries, FakeClock, T0, VmSeries } from './series.ts';

class FakeProvisioner {
  pool: Vm[] = [];
  log: string[] = [];
  async acquire(spec: VmSpec): Promise<Acquired> {
    const p = pickFromPool(this.pool, spec);
    if (p) {
      this.pool = this.pool.filter((v) => v !== p);
      const reuse = p.state === 'paused' ? 'resume' : 'boot';
      p.state = 'running';
      this.log.push(`reuse ${p.name} (${reuse})`);
      return { vm: p, pooled: true, reuse, clone_ms: 0, boot_ms: reuse === 'resume' ? 5 : 11_000 };
    }
    const vm: Vm = { name: spec.name, spec, state: 'running', disk: `/tmp/${spec.name}.qcow2`, serialLog: `/tmp/${spec.name}.log` };
    this.log.push(`clone ${spec.name}`);
    return { vm, pooled: false, clone_ms: 40, boot_ms: 11_000 };
  }
  async release(vm: Vm, mode: ReleaseMode = 'pause'): Promise<void> {
    vm.state = mode === 'pause' ? 'paused' : 'stopped';
    this.pool.push(vm);
    this.log.push(`release ${vm.name} (${mode})`);
  }
}

class FakeLb implements LoadBalancer {
  backends = new Map<string, Backend[]>();
  async addBackend(service: string, b: Backend) {
    this.backends.set(service, [...(this.backends.get(service) ?? []), b]);
  }
  async removeBackend(service: string, b: Backend) {
    this.backends.set(service, (this.backends.get(service) ?? []).filter((x) => x.vm !== b.vm));
  }
}

/** Autoscaler options on a fake clock (sleep advances it) with the fake provisioner and balancer; a test gives the rest. */
function onFakes(clock: FakeClock, o: Pick<AutoscalerOptions, 'vms' | 'engine' | 'vmSource' | 'sampler'> & Partial<AutoscalerOptions>): AutoscalerOptions {
  return {
    provisioner: new FakeProvisioner(),
    lb: new FakeLb(),
    clock: clock.now,
    sleep: async (ms) => {
      clock.ms += ms;
    },
    specFor: (container, name) => ({ name, vcpus: 1, memMiB: 128, kernel: 'k', initrd: 'i', cmdline: '', disk: 'overlay', container }),
    emit: () => {},
    ...o,
  };
}

describe('Autoscaler loop', () => {
  it('scale out on a hot container, scale in back to the pool, reuse the pooled VM', async () => {
    const clock = new FakeClock();
    const engine = new PolicyEngine(
      {
        policies: [{ resource: 'cpu', vmThreshold: 0.8, containerThreshold: 0.7, target: 0.5 }],
        scaleUpCooldownMs: 5_000,
        scaleDownWindowMs: 10_000,
      },
      clock.now,
    );
    // a script of (VM util, container utils) per 1 s interval
    const script: [number, Record<string, number>][] = [
      [0, { web: 0, db: 0 }],
      [0.5, { web: 0.3, db: 0.1 }],
      [0.95, { web: 0.8, db: 0.1 }], // hot: web over 70 % → ceil(0.8/0.5) = 2
      [0.6, { web: 0.45, db: 0.1 }], // balanced: 45 % per replica (within tolerance of 50 %)
      ...Array.from({ length: 12 }, (): [number, Record<string, number>] => [0.3, { web: 0.1, db: 0.1 }]),
      [0.95, { web: 0.9, db: 0.05 }], // hot again → reuse the pooled VM
    ];
    const vmS = new VmSeries('origin', 1);
    const cs = new ContainerSeries('origin', 1);
    let i = 0;
    const samples: number[] = [];
    const vmSource = { vmStats: async (): Promise<VmStats> => vmS.at(i * 1000, script[i]![0]) };
    // container counters advance every interval (as the guest's do); the sampler reads them at clock time
    const sampler = {
      sample: async (): Promise<Sample> => {
        samples.push(clock.ms - T0);
        return cs.at(clock.ms - T0, script[i]![1]);
      },
    };
    const prov = new FakeProvisioner();
    const lb = new FakeLb();
    const out = new PassThrough();
    const lines: string[] = [];
    out.on('data', (b: Buffer) => lines.push(...b.toString().split('\n').filter(Boolean)));
    const a = new Autoscaler({
      vms: ['origin'],
      engine,
      vmSource,
      sampler,
      provisioner: prov,
      lb,
      clock: clock.now,
      sleep: async (ms) => {
        clock.ms += ms;
      },
      containerBaseline: 'on-demand',
      baselineMs: 200,
      specFor: (container, name) => ({
        name,
        vcpus: 1,
        memMiB: 256,
        kernel: '/k',
        initrd: '/i',
        cmdline: `console=ttyS0 ciel.container=${container}`,
        disk: 'overlay',
        container,
      }),
      emit: jsonLines(out),
    });
    const all: ControllerEvent[] = [];
    for (i = 0; i < script.length; i++) {
      clock.set(i * 1000);
      cs.at(i * 1000, script[i]![1]);
      all.push(...(await a.step()));
      await a.idle();
    }
    const decisions = all.filter((e) => e.type === 'decision').map((e) => e.type === 'decision' && [e.action, e.container, e.from, e.to, e.time.slice(17, 19)]);
    expect(decisions).toEqual([
      ['scale_out', 'web', 1, 2, '02'],
      ['scale_in', 'web', 2, 1, '13'], // last recommendation of 2 at 3 s leaves the 10 s window at 13 s
      ['scale_out', 'web', 1, 2, '16'],
    ]);
    expect(prov.log).toEqual(['clone ciel-web-1', 'release ciel-web-1 (pause)', 'reuse ciel-web-1 (resume)']);
    expect(lb.backends.get('web')!.map((b) => b.vm)).toEqual(['ciel-web-1']);
    // two-level monitoring: no container samples at 0-1 s (cool, nothing scaled out) nor at 14-15 s
    // (scaled in); a hot VM with no fresh baseline gets a baseline sample + one 200 ms later
    expect(samples).toEqual([2000, 2200, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10_000, 11_000, 12_000, 13_000, 16_000, 16_200]);
    await new Promise((r) => setImmediate(r));
    const parsed = lines.map((l) => JSON.parse(l) as ControllerEvent);
    const actions = parsed.filter((e) => e.type === 'scaled_out' || e.type === 'scaled_in');
    expect(actions).toMatchObject([
      { type: 'scaled_out', container: 'web', replica: 'ciel-web-1', pooled: false, clone_ms: 40, boot_ms: 11_000 },
      { type: 'scaled_in', container: 'web', replica: 'ciel-web-1' },
      { type: 'scaled_out', container: 'web', replica: 'ciel-web-1', pooled: true, clone_ms: 0, boot_ms: 5 },
    ]);
    expect(parsed.filter((e) => e.type === 'vm_check')).toHaveLength(script.length);
  });

  it("kept baseline (the default): cool intervals take one unpaused baseline read, the first hot interval decides at once", async () => {
    const clock = new FakeClock();
    const engine = new PolicyEngine({ policies: [{ resource: 'cpu', vmThreshold: 0.8, containerThreshold: 0.7, target: 0.5 }] }, clock.now);
    const script: [number, Record<string, number>][] = [
      [0, { web: 0, db: 0 }],
      [0.3, { web: 0.1, db: 0.1 }],
      [0.3, { web: 0.1, db: 0.1 }],
      [0.95, { web: 0.9, db: 0.05 }],
    ];
    const vmS = new VmSeries('origin', 1);
    const cs = new ContainerSeries('origin', 1);
    let i = 0;
    const reads: string[] = [];
    const a = new Autoscaler(onFakes(clock, {
      vms: ['origin'],
      engine,
      vmSource: { vmStats: async (): Promise<VmStats> => vmS.at(i * 1000, script[i]![0]) },
      sampler: {
        sample: async (): Promise<Sample> => {
          reads.push(`sample@${clock.ms - T0}`);
          return cs.at(clock.ms - T0, script[i]![1]);
        },
        baseline: async (): Promise<Sample> => {
          reads.push(`baseline@${clock.ms - T0}`);
          return cs.at(clock.ms - T0, script[i]![1]);
        },
      },
    }));
    const decisions: string[] = [];
    for (i = 0; i < script.length; i++) {
      clock.set(i * 1000);
      cs.at(i * 1000, script[i]![1]);
      for (const e of await a.step()) if (e.type === 'decision') decisions.push(`${e.action} ${e.container} ${e.from}->${e.to} @${e.time.slice(17, 19)}`);
      await a.idle();
    }
    // no extra baseline read and no wait once hot: one consistent sample at 3 s, and the decision with it
    expect(reads).toEqual(['baseline@0', 'baseline@1000', 'baseline@2000', 'sample@3000']);
    expect(decisions).toEqual(['scale_out web 1->2 @03']);
  });

  // run() on a fake clock: web's load (0.7 of the VM) switches on at `onAt` ms, the rest of the VM reads
  // 0.2 (0.04 of it db); VM and container rates come from the real load over each real window
  async function runWith(o: { onAt: number; webLoad?: number; dbLoad?: number; rest?: number; until: number; recheckNewlyHot?: boolean }) {
    const clock = new FakeClock();
    const engine = new PolicyEngine(
      { policies: [{ resource: 'cpu', vmThreshold: 0.35, containerThreshold: 0.45, target: 0.4, vmTarget: 0.3 }], maxReplicas: 2 },
      clock.now,
    );
    const web = o.webLoad ?? 0.7;
    const db = o.dbLoad ?? 0.04;
    const rest = o.rest ?? 0.16;
    const webAvg = (a: number, b: number) => (b > a ? (web * Math.max(0, b - Math.max(a, o.onAt))) / (b - a) : 0);
    const vmS = new VmSeries('origin', 1);
    const cs = new ContainerSeries('origin', 1);
    let vmLast = 0;
    let cLast = 0;
    const checks: number[] = [];
    const read = async (): Promise<Sample> => {
      const t = clock.ms - T0;
      const s = cs.at(t, { web: webAvg(cLast, t), db });
      cLast = t;
      return s;
    };
    const ac = new AbortController();
    const decisions: string[] = [];
    const a = new Autoscaler(onFakes(clock, {
      vms: ['origin'],
      engine,
      vmSource: {
        vmStats: async (): Promise<VmStats> => {
          const t = clock.ms - T0;
          checks.push(t);
          const st = vmS.at(t, rest + db + webAvg(vmLast, t));
          vmLast = t;
          return st;
        },
      },
      sampler: { sample: read, baseline: read },
      sleep: async (ms) => {
        clock.ms += ms;
        if (clock.ms - T0 >= o.until) ac.abort();
      },
      intervalMs: 100,
      ...(o.recheckNewlyHot === undefined ? {} : { recheckNewlyHot: o.recheckNewlyHot }),
      emit: (e) => {
        if (e.type === 'decision') decisions.push(`${e.action} ${e.container} @${clock.ms - T0}`);
      },
    }));
    await a.run(ac.signal);
    return { checks, decisions };
  }

  it('a VM that turns hot without a decision is checked again after half an interval (once per hot streak)', async () => {
    // web switches on 25 ms before the check at 200: the VM reads 0.375 (hot) but web only 0.175 of it
    // (47 %, under trendMinShare 0.5) → no decision at 200; the re-check at 250 sees web at 0.7
    const r = await runWith({ onAt: 175, until: 400 });
    expect(r.checks.slice(0, 5)).toEqual([0, 100, 200, 250, 350]);
    expect(r.decisions).toEqual(['scale_out web @250']);
    // without it, the decision waits a whole interval
    const plain = await runWith({ onAt: 175, until: 400, recheckNewlyHot: false });
    expect(plain.checks.slice(0, 4)).toEqual([0, 100, 200, 300]);
    expect(plain.decisions).toEqual(['scale_out web @300']);
    // a VM that stays hot and undecided (db at 0.1 of a VM reading 0.4: no container carries half)
    // gets one re-check when it turns hot, then the normal cadence
    const noisy = await runWith({ onAt: Infinity, dbLoad: 0.1, rest: 0.3, until: 600 });
    expect(noisy.checks).toEqual([0, 100, 150, 250, 350, 450, 550]);
    expect(noisy.decisions).toEqual([]);
  });

  it('a failing stats source or sampler becomes an error event; the loop goes on', async () => {
    const clock = new FakeClock();
    const engine = new PolicyEngine({ policies: [{ resource: 'cpu', vmThreshold: 0.5, target: 0.5 }] }, clock.now);
    const vmS = new VmSeries('ok', 1);
    const events: ControllerEvent[] = [];
    const a = new Autoscaler(onFakes(clock, {
      vms: ['gone', 'ok'],
      engine,
      vmSource: {
        vmStats: async (vm) => {
          if (vm === 'gone') throw new Error('domain not found');
          return vmS.at(clock.ms - T0, 0.9);
        },
      },
      sampler: {
        sample: async () => {
          throw new Error('VMI read failed');
        },
      },
      emit: (e) => events.push(e),
    }));
    await a.step();
    clock.set(1000);
    await a.step();
    const errs = events.filter((e) => e.type === 'error');
    // the cool first interval's kept baseline fails too, and does not stop the loop
    expect(errs.map((e) => e.type === 'error' && [e.where, e.vm, e.error])).toEqual([
      ['vm_stats', 'gone', 'domain not found'],
      ['container_sample', 'ok', 'VMI read failed'],
      ['vm_stats', 'gone', 'domain not found'],
      ['container_sample', 'ok', 'VMI read failed'],
    ]);
    expect(events.filter((e) => e.type === 'vm_hot')).toHaveLength(1);
  });

  it('a failed scale-out resets the engine replica count', async () => {
    const clock = new FakeClock();
    const engine = new PolicyEngine({ policies: [{ resource: 'cpu', vmThreshold: 0.8, containerThreshold: 0.7, target: 0.5 }] }, clock.now);
    const vmS = new VmSeries('o', 1);
    const cs = new ContainerSeries('o', 1);
    let t = 0;
    const events: ControllerEvent[] = [];
    const a = new Autoscaler(onFakes(clock, {
      vms: ['o'],
      engine,
      vmSource: { vmStats: async () => vmS.at(t, t === 0 ? 0 : 0.95) },
      sampler: { sample: async () => cs.at(clock.ms - T0, { web: 0.9 }) },
      provisioner: {
        acquire: async () => {
          throw new Error('no space left');
        },
        release: async () => {},
      },
      emit: (e) => events.push(e),
    }));
    await a.step(); // VM baseline
    t = 1000;
    clock.set(t);
    await a.step();
    await a.idle();
    expect(events.find((e) => e.type === 'action_failed')).toMatchObject({ container: 'web', error: 'no space left' });
    expect(engine.replicas('web')).toBe(1);
  });
});
