import { describe, expect, it } from 'vitest';
import { PolicyEngine } from '../../controller/policy.ts';
import { hpaDesired, lsqSlope } from '../../controller/math.ts';
import { counterRate } from '../../vmi/rates.ts';
import type { ControllerEvent, DecisionEvent, PolicyConfig } from '../../controller/types.ts';
import type { Sample } from '../../vmi/sample.ts';
import { ContainerSeries, FakeClock, GiB, T0, VmSeries } from './series.ts';

const cpuPolicy = (o: Partial<PolicyConfig> = {}, p: Partial<PolicyConfig['policies'][0]> = {}): PolicyConfig => ({
  policies: [{ resource: 'cpu', vmThreshold: 0.8, containerThreshold: 0.5, target: 0.5, vmTarget: 0.6, ...p }],
  maxRateGapMs: 20_000,
  ...o,
});

const of = <T extends ControllerEvent['type']>(evs: ControllerEvent[], type: T) =>
  evs.filter((e) => e.type === type) as Extract<ControllerEvent, { type: T }>[];

/** decision without time for exact comparison */
const strip = (d: DecisionEvent) => ({ action: d.action, container: d.container, from: d.from, to: d.to, resource: d.resource });

describe('math', () => {
  it('HPA formula: ceil(current * metric / target)', () => {
    expect(hpaDesired(1, 0.9, 0.5, 0.1, 1, 10)).toEqual({ ratio: 1.8, withinTolerance: false, desired: 2 });
    expect(hpaDesired(3, 0.9, 0.5, 0.1, 1, 10).desired).toBe(6); // ceil(5.4)
    expect(hpaDesired(2, 0.6, 0.3, 0.1, 1, 10).desired).toBe(4); // 2*2 exactly, no float creep to 5
    expect(hpaDesired(4, 0.1, 0.5, 0.1, 1, 10).desired).toBe(1); // ceil(0.8)
    expect(hpaDesired(4, 2.0, 0.5, 0.1, 1, 10).desired).toBe(10); // clamped to max
    expect(hpaDesired(1, 0.0, 0.5, 0.1, 1, 10).desired).toBe(1); // clamped to min
  });
  it('tolerance boundary: exactly 10 % is no change, 11 % scales', () => {
    expect(hpaDesired(1, 0.55, 0.5, 0.1, 1, 10)).toMatchObject({ withinTolerance: true, desired: 1 });
    expect(hpaDesired(1, 0.555, 0.5, 0.1, 1, 10)).toMatchObject({ withinTolerance: false, desired: 2 });
    expect(hpaDesired(2, 0.45, 0.5, 0.1, 1, 10)).toMatchObject({ withinTolerance: true, desired: 2 });
    expect(hpaDesired(2, 0.445, 0.5, 0.1, 1, 10)).toMatchObject({ withinTolerance: false, desired: 2 }); // ceil(1.78)
  });
  it('counter rates use the real elapsed time', () => {
    expect(counterRate(0, 1500, 1500, 1000)).toBe(1000); // elapsed in ms
    expect(counterRate(100, 50, 1000, 1000)).toBeNull(); // counter went backwards
    expect(counterRate(0, 10, 0, 1000)).toBeNull();
  });
  it('least-squares slope', () => {
    expect(lsqSlope([{ x: 0, y: 1 }, { x: 1, y: 3 }, { x: 2, y: 5 }])).toBeCloseTo(2, 12);
    expect(lsqSlope([{ x: 0, y: 0.2 }, { x: 1, y: 0.3 }, { x: 3, y: 0.2 }])).toBeCloseTo(-0.0071428571, 9);
    expect(lsqSlope([{ x: 5, y: 1 }])).toBe(0);
  });
});

describe('VM-level check (two-level monitoring)', () => {
  it('VM utilisation from cpu.time over the real elapsed time; containers sampled only when hot', () => {
    const clock = new FakeClock();
    const eng = new PolicyEngine(cpuPolicy(), clock.now);
    const vm = new VmSeries('web-vm', 2);
    const r0 = eng.observeVm(vm.at(0, 0));
    expect(r0.util.cpu).toBeUndefined();
    expect(r0.sampleContainers).toBe(false);
    const r1 = eng.observeVm(vm.at(1000, 0.5));
    expect(r1.util.cpu).toBeCloseTo(0.5, 9);
    expect(r1.sampleContainers).toBe(false);
    expect(of(r1.events, 'vm_hot')).toEqual([]);
    // exactly at the threshold is not hot (strictly above)
    const r2 = eng.observeVm(vm.at(2000, 0.8));
    expect(r2.util.cpu).toBeCloseTo(0.8, 9);
    expect(r2.hot).toEqual([]);
    // a late reading (1.5 s after the previous one): 2.55 s of CPU on 2 vCPUs is 85 %, hot
    const r3 = eng.observeVm(vm.at(3500, 0.85));
    expect(r3.util.cpu).toBeCloseTo(0.85, 9);
    expect(r3.hot).toEqual(['cpu']);
    expect(r3.sampleContainers).toBe(true);
    expect(of(r3.events, 'vm_hot')).toMatchObject([{ vm: 'web-vm', resource: 'cpu', threshold: 0.8 }]);
    const r4 = eng.observeVm(vm.at(4500, 0.3));
    expect(r4.sampleContainers).toBe(false);
    expect(of(r4.events, 'vm_cool')).toHaveLength(1);
  });

  it('irregular VM intervals: the same CPU use gives the same utilisation, not a spike', () => {
    const eng = new PolicyEngine(cpuPolicy(), new FakeClock().now);
    const vm = new VmSeries('v', 1);
    eng.observeVm(vm.at(0, 0));
    const utils = [1000, 2700, 3100, 5600, 6600].map((ms) => eng.observeVm(vm.at(ms, 0.6)).util.cpu!);
    for (const u of utils) expect(u).toBeCloseTo(0.6, 9);
  });

  it('memory, disk and network policies', () => {
    const eng = new PolicyEngine(
      {
        policies: [
          { resource: 'memory', vmThreshold: 0.9, target: 0.7 },
          { resource: 'disk', vmThreshold: 0.5, target: 0.4 },
          { resource: 'network', vmThreshold: 0.5, target: 0.4 },
        ],
        capacities: { diskBytesPerSec: 1000, netBytesPerSec: 2000 },
      },
      new FakeClock().now,
    );
    const vm = new VmSeries('v', 1, 4 * GiB);
    eng.observeVm(vm.at(0, 0));
    const r = eng.observeVm(vm.at(2000, 0.1, { memUsed: 3.8 * GiB, diskBps: 600, netBps: 500 }));
    expect(r.util.memory).toBeCloseTo(0.95, 9);
    expect(r.util.disk).toBeCloseTo(0.6, 9);
    expect(r.util.network).toBeCloseTo(0.25, 9);
    expect(r.hot).toEqual(['memory', 'disk']);
  });
});

/** Drive engine + series: VM reading then container sample at the same offset. */
function driver(cfg: PolicyConfig, vcpus = 1) {
  const clock = new FakeClock();
  const eng = new PolicyEngine(cfg, clock.now);
  const vm = new VmSeries('vm1', vcpus);
  const cs = new ContainerSeries('vm1', vcpus);
  return {
    eng,
    clock,
    /** returns engine events of both levels; containers sampled only when the engine asks (unless force) */
    step(ms: number, vmUtil: number, utils: Record<string, number>, force = false) {
      clock.set(ms);
      const r = eng.observeVm(vm.at(ms, vmUtil));
      const s: Sample = cs.at(ms, utils);
      if (!r.sampleContainers && !force) return { vm: r, events: r.events, decisions: [] as DecisionEvent[], sampled: false };
      const c = eng.observeContainers(s);
      return { vm: r, events: [...r.events, ...c.events], decisions: c.decisions, sampled: true };
    },
  };
}

describe('container choice', () => {
  it('the one container over its own threshold is chosen and sized by HPA', () => {
    const d = driver(cpuPolicy({}, { containerThreshold: 0.7, target: 0.5 }));
    d.step(0, 0, { a: 0, b: 0, c: 0 }, true);
    const r = d.step(1000, 0.95, { a: 0.1, b: 0.75, c: 0.1 });
    expect(r.sampled).toBe(true);
    expect(of(r.events, 'container_hot').map((e) => [e.container, e.resource])).toEqual([['b', 'cpu']]);
    expect(of(r.events, 'container_chosen')).toMatchObject([{ container: 'b', rule: 'over_threshold' }]);
    expect(r.decisions.map(strip)).toEqual([{ action: 'scale_out', container: 'b', from: 1, to: 2, resource: 'cpu' }]); // ceil(0.75/0.5)
    expect(d.eng.replicas('b')).toBe(2);
    expect(d.eng.replicas('a')).toBe(1);
  });

  it('per-container thresholds', () => {
    const d = driver(cpuPolicy({}, { containerThreshold: 0.7, containerThresholds: { db: 0.3 }, target: 0.3 }));
    d.step(0, 0, { web: 0, db: 0 }, true);
    const r = d.step(1000, 0.9, { web: 0.5, db: 0.4 });
    expect(of(r.events, 'container_chosen').map((e) => e.container)).toEqual(['db']);
    expect(r.decisions.map(strip)).toEqual([{ action: 'scale_out', container: 'db', from: 1, to: 2, resource: 'cpu' }]);
  });

  it('none over threshold: the trend rule picks the rising container, not the larger flat one', () => {
    // 2 vCPUs; a flat at 40 %, b rising 6 %/s at irregular times; VM hot only at the last reading
    // both carry a meaningful share (a 47 %, b 45 % of the VM's 85 %: trendMinShare 0.4 here)
    const d = driver(cpuPolicy({ trendPoints: 5, trendHorizonS: 15, trendMinShare: 0.4 }, { vmThreshold: 0.75, containerThreshold: 0.7, vmTarget: 0.6 }), 2);
    d.step(0, 0, { a: 0, b: 0 }, true);
    d.step(1000, 0.6, { a: 0.4, b: 0.2 }, true);
    d.step(2000, 0.66, { a: 0.4, b: 0.26 }, true);
    d.step(3000, 0.72, { a: 0.4, b: 0.32 }, true);
    const r = d.step(4000, 0.85, { a: 0.4, b: 0.38 });
    expect(r.sampled).toBe(true);
    expect(of(r.events, 'container_hot')).toEqual([]);
    const chosen = of(r.events, 'container_chosen');
    expect(chosen).toHaveLength(1);
    expect(chosen[0]).toMatchObject({ container: 'b', rule: 'trend', resource: 'cpu' });
    const c = Object.fromEntries(chosen[0]!.candidates!.map((x) => [x.container, x]));
    expect(c.a!.slope).toBeCloseTo(0, 9);
    expect(c.b!.slope).toBeCloseTo(0.06, 9);
    expect(c.a!.projected).toBeCloseTo(0.4, 9);
    expect(c.b!.projected).toBeCloseTo(0.38 + 0.06 * 15, 9);
    expect(c.a!.share).toBeCloseTo(0.4 / 0.85, 9);
    // sized from the VM's ratio: ceil(1 * 0.85 / 0.6) = 2
    expect(r.decisions.map(strip)).toEqual([{ action: 'scale_out', container: 'b', from: 1, to: 2, resource: 'cpu' }]);
    expect(r.decisions[0]!.reason).toMatch(/^trend/);
  });

  it('trend rule with no history falls back to the largest share; ties to the smaller name', () => {
    const d = driver(cpuPolicy({ trendMinShare: 0.3 }, { vmThreshold: 0.75, containerThreshold: 0.7, vmTarget: 0.6 }));
    d.step(0, 0, { x: 0, y: 0, z: 0 }, true);
    const r = d.step(1000, 0.9, { x: 0.3, y: 0.3, z: 0.2 });
    expect(of(r.events, 'container_chosen')).toMatchObject([{ container: 'x', rule: 'trend' }]);
  });

  it('trend slope uses real sample times (irregular intervals)', () => {
    const d = driver(cpuPolicy({ trendHorizonS: 10, trendMinShare: 0.2 }, { vmThreshold: 0.75, containerThreshold: 0.7 }));
    d.step(0, 0, { a: 0, b: 0 }, true);
    d.step(500, 0.5, { a: 0.3, b: 0.3 }, true);
    d.step(2500, 0.5, { a: 0.3, b: 0.2 }, true); // b falls 0.05/s over the real 2 s
    const r = d.step(3000, 0.8, { a: 0.3, b: 0.175 });
    const c = Object.fromEntries(of(r.events, 'container_chosen')[0]!.candidates!.map((x) => [x.container, x]));
    // b points at x = 0.5, 2.5, 3.0 s: y = 0.3, 0.2, 0.175 → lsq slope -0.05/s exactly
    expect(c.b!.slope).toBeCloseTo(-0.05, 9);
    expect(of(r.events, 'container_chosen')[0]!.container).toBe('a');
  });
});

describe('trend rule: a meaningful share of the VM load', () => {
  // 2 vCPUs at 10 Hz, the demo's thresholds. Series from the demo's origin VM: idle VM readings are
  // 0.15-0.25 (TCG overhead + db + batch), batch alternates 0.15 / 0.01 of the VM (30 % / 2 % of a CPU).
  const demo = () => cpuPolicy({ maxReplicas: 2 }, { vmThreshold: 0.35, containerThreshold: 0.45, target: 0.4, vmTarget: 0.3 });

  it('a noisy VM reading while the periodic job steps up chooses nobody (no_choice), and decides nothing', () => {
    const d = driver(demo(), 2);
    d.step(0, 0, { web: 0, db: 0, batch: 0 }, true);
    d.step(100, 0.2, { web: 0.025, db: 0.04, batch: 0.01 }, true);
    d.step(200, 0.21, { web: 0.025, db: 0.04, batch: 0.01 }, true);
    // batch steps up to 0.15 (its own threshold is 0.45) and the VM reads 0.4 for one interval
    const r = d.step(300, 0.4, { web: 0.025, db: 0.04, batch: 0.15 });
    expect(r.sampled).toBe(true);
    expect(of(r.events, 'container_chosen')).toEqual([]);
    const nc = of(r.events, 'no_choice');
    expect(nc).toHaveLength(1);
    expect(nc[0]!.min_share).toBe(0.5);
    expect(nc[0]!.vm_util).toBeCloseTo(0.4, 9);
    // batch's share: 0.15 of the VM's 0.4
    expect(nc[0]!.candidates.find((c) => c.container === 'batch')!.share).toBeCloseTo(0.375, 9);
    expect(r.decisions).toEqual([]);
  });

  it('the container that carries the rise is chosen at the first hot interval and sized by the VM ratio', () => {
    const d = driver(demo(), 2);
    d.step(0, 0, { web: 0, db: 0, batch: 0 }, true);
    d.step(100, 0.2, { web: 0.025, db: 0.04, batch: 0.01 }, true);
    d.step(200, 0.21, { web: 0.025, db: 0.04, batch: 0.01 }, true);
    // web's load stepped up 70 ms before this reading: 0.3 of the window, below its own 0.45
    const r = d.step(300, 0.48, { web: 0.3, db: 0.04, batch: 0.01 });
    expect(of(r.events, 'container_hot')).toEqual([]);
    expect(of(r.events, 'container_chosen')).toMatchObject([{ container: 'web', rule: 'trend' }]);
    // ceil(1 * 0.48 / 0.3) = 2
    expect(r.decisions.map(strip)).toEqual([{ action: 'scale_out', container: 'web', from: 1, to: 2, resource: 'cpu' }]);
  });
});

describe('HPA tolerance, cooldown, stabilisation', () => {
  it('tolerance boundary on a measured series: 55 % vs target 50 % holds, 55.5 % scales', () => {
    const d = driver(cpuPolicy({}, { containerThreshold: 0.5, target: 0.5 }));
    d.step(0, 0, { w: 0 }, true);
    const r10 = d.step(1000, 0.9, { w: 0.55 });
    expect(of(r10.events, 'container_hot')).toHaveLength(1);
    expect(r10.decisions).toEqual([]);
    expect(of(r10.events, 'tolerance_skip')).toMatchObject([{ container: 'w', current: 1 }]);
    expect(of(r10.events, 'tolerance_skip')[0]!.ratio).toBeCloseTo(1.1, 9);
    const r11 = d.step(2000, 0.9, { w: 0.555 });
    expect(r11.decisions.map(strip)).toEqual([{ action: 'scale_out', container: 'w', from: 1, to: 2, resource: 'cpu' }]);
  });

  it('scale-up cooldown', () => {
    const d = driver(cpuPolicy({ scaleUpCooldownMs: 30_000 }, { containerThreshold: 0.5, target: 0.5 }));
    d.step(0, 0, { w: 0 }, true);
    expect(d.step(1000, 0.9, { w: 0.8 }).decisions.map(strip)).toEqual([
      { action: 'scale_out', container: 'w', from: 1, to: 2, resource: 'cpu' },
    ]);
    // still at 80 % per replica: desired ceil(2 * 1.6) = 4, but inside the cooldown
    const r = d.step(11_000, 0.9, { w: 0.8 });
    expect(r.decisions).toEqual([]);
    expect(of(r.events, 'cooldown_skip')).toEqual([
      { type: 'cooldown_skip', time: new Date(T0 + 11_000).toISOString(), container: 'w', current: 2, desired: 4, until: new Date(T0 + 31_000).toISOString() },
    ]);
    expect(d.step(21_000, 0.9, { w: 0.8 }).decisions).toEqual([]);
    expect(d.step(31_000, 0.9, { w: 0.8 }).decisions.map(strip)).toEqual([
      { action: 'scale_out', container: 'w', from: 2, to: 4, resource: 'cpu' },
    ]);
  });

  it('scale-down stabilisation window: the max recommendation over the window wins', () => {
    const d = driver(cpuPolicy({ scaleDownWindowMs: 60_000, maxRateGapMs: 15_000 }, { containerThreshold: 0.5, target: 0.5 }));
    d.step(0, 0, { w: 0 }, true);
    expect(d.step(1000, 0.9, { w: 0.9 }).decisions.map(strip)).toEqual([
      { action: 'scale_out', container: 'w', from: 1, to: 2, resource: 'cpu' },
    ]);
    // 10 s later still busy: desired ceil(2*0.6/0.5) = 3 is blocked by the cooldown but recorded
    d.step(11_000, 0.7, { w: 0.6 });
    // load falls: VM not hot, but the scaled-out container is still sampled (scale-in watch)
    const holds: number[] = [];
    for (let ms = 21_000; ms <= 61_000; ms += 10_000) {
      const r = d.step(ms, 0.3, { w: 0.1 });
      expect(r.sampled).toBe(true);
      expect(of(r.events, 'containers_sampled')[0]!.reason).toBe('scaled_out');
      expect(r.decisions).toEqual([]);
      const h = of(r.events, 'stabilization_hold');
      expect(h).toHaveLength(1);
      holds.push(h[0]!.stabilized);
    }
    // the recommendation of 3 at 11 s keeps the count up until it leaves the 60 s window
    expect(holds).toEqual([3, 3, 3, 3, 3]);
    const r = d.step(71_000, 0.3, { w: 0.1 });
    expect(r.decisions.map(strip)).toEqual([{ action: 'scale_in', container: 'w', from: 2, to: 1, resource: 'cpu' }]);
    expect(d.eng.replicas('w')).toBe(1);
    // back at one replica and cool: no container sampling any more
    expect(d.step(81_000, 0.3, { w: 0.1 }).sampled).toBe(false);
  });
});

describe('container counters', () => {
  it('container rates from the real elapsed time between samples', () => {
    const d = driver(cpuPolicy({}, { containerThreshold: 0.9, vmThreshold: 0.5 }));
    d.step(0, 0, { w: 0 }, true);
    for (const ms of [1000, 2700, 3200, 6100]) {
      const r = d.step(ms, 0.7, { w: 0.62 });
      const u = of(r.events, 'containers_sampled')[0]!.util.w!.cpu!;
      expect(u).toBeCloseTo(0.62, 9);
    }
  });

  it('a counter that goes backwards re-baselines instead of giving a rate', () => {
    const clock = new FakeClock();
    const eng = new PolicyEngine(cpuPolicy(), clock.now);
    const vm = new VmSeries('vm1', 1);
    eng.observeVm(vm.at(0, 0));
    eng.observeVm(vm.at(1000, 0.9));
    const mk = (ms: number, ns: number): Sample => ({
      time: new Date(T0 + ms).toISOString(),
      kernel: 'k',
      sample_us: 1,
      vm: 'vm1',
      containers: [{ id: 'i', cgroup: '/docker/i', name: 'w', cpu_usage_ns: ns, memory_usage_bytes: 0, memory_rss_bytes: 0, memory_cache_bytes: 0, io_read_bytes: 0, io_write_bytes: 0, net_rx_bytes: 0, net_tx_bytes: 0, pids: 1 }],
    });
    expect(of(eng.observeContainers(mk(1000, 5e9)).events, 'no_rate')[0]!.reason).toMatch(/first sample/);
    expect(of(eng.observeContainers(mk(2000, 1e9)).events, 'no_rate')[0]!.reason).toMatch(/backwards/);
    const r = eng.observeContainers(mk(3000, 1.3e9));
    expect(of(r.events, 'containers_sampled')[0]!.util.w!.cpu).toBeCloseTo(0.3, 9);
    // a baseline older than maxRateGapMs (20 s here) is dropped
    expect(of(eng.observeContainers(mk(30_000, 9e9)).events, 'no_rate')[0]!.reason).toMatch(/too old/);
  });

  it('memory policy on containers: memory_usage_bytes relative to the VM memory', () => {
    const clock = new FakeClock();
    const eng = new PolicyEngine({ policies: [{ resource: 'memory', vmThreshold: 0.8, containerThreshold: 0.5, target: 0.4 }] }, clock.now);
    const vm = new VmSeries('vm1', 1, 4 * GiB);
    const cs = new ContainerSeries('vm1', 1);
    const r = eng.observeVm(vm.at(0, 0, { memUsed: 3.5 * GiB }));
    expect(r.hot).toEqual(['memory']);
    const c = eng.observeContainers(cs.at(0, { cache: 0, app: 0 }, { cache: 2.4 * GiB, app: 0.8 * GiB }));
    expect(c.decisions.map(strip)).toEqual([{ action: 'scale_out', container: 'cache', from: 1, to: 2, resource: 'memory' }]);
  });

  it('decisions are JSON-serialisable with timestamps from the injected clock', () => {
    const d = driver(cpuPolicy({}, { containerThreshold: 0.5, target: 0.5 }));
    d.step(0, 0, { w: 0 }, true);
    const r = d.step(1000, 0.9, { w: 0.8 });
    const back = JSON.parse(JSON.stringify(r.events)) as ControllerEvent[];
    expect(back).toEqual(r.events);
    for (const e of back) expect(e.time).toBe(new Date(T0 + 1000).toISOString());
    expect(r.decisions[0]).toMatchObject({ type: 'decision', action: 'scale_out', vm: 'vm1', container: 'w', from: 1, to: 2, metric: expect.closeTo(0.8, 9), target: 0.5 });
  });
});

describe('more engine behaviour', () => {
  it('two containers over threshold: both sized, most over first; maxReplicas clamps', () => {
    const d = driver(cpuPolicy({ maxReplicas: 3 }, { containerThreshold: 0.3, target: 0.2 }), 2);
    d.step(0, 0, { a: 0, b: 0, c: 0 }, true);
    const r = d.step(1000, 0.95, { a: 0.35, b: 0.5, c: 0.1 });
    expect(of(r.events, 'container_chosen').map((e) => e.container)).toEqual(['b', 'a']);
    expect(r.decisions.map(strip)).toEqual([
      { action: 'scale_out', container: 'b', from: 1, to: 3, resource: 'cpu' }, // ceil(2.5) = 3 (max 3)
      { action: 'scale_out', container: 'a', from: 1, to: 2, resource: 'cpu' }, // ceil(1.75)
    ]);
    // still hot after the cooldown: b stays at the maximum, no decision
    d.step(11_000, 0.95, { a: 0.2, b: 0.9, c: 0.1 });
    d.step(21_000, 0.95, { a: 0.2, b: 0.9, c: 0.1 });
    const r2 = d.step(32_000, 0.95, { a: 0.2, b: 0.9, c: 0.1 });
    expect(of(r2.events, 'containers_sampled')[0]!.util.b!.cpu).toBeCloseTo(0.9, 9);
    expect(of(r2.events, 'container_chosen').map((e) => e.container)).toEqual(['b']);
    expect(r2.decisions).toEqual([]);
    expect(d.eng.replicas('b')).toBe(3);
  });

  it('needsBaseline / primeContainers: a prime gives the next sample a rate', () => {
    const clock = new FakeClock();
    const eng = new PolicyEngine(cpuPolicy(), clock.now);
    const vm = new VmSeries('vm1', 1);
    const cs = new ContainerSeries('vm1', 1);
    eng.observeVm(vm.at(0, 0));
    clock.set(1000);
    eng.observeVm(vm.at(1000, 0.9));
    expect(eng.needsBaseline('vm1', 1500)).toBe(true);
    cs.at(0, { w: 0 });
    eng.primeContainers(cs.at(1000, { w: 0.9 }));
    expect(eng.needsBaseline('vm1', 1500)).toBe(false);
    clock.set(1250);
    const r = eng.observeContainers(cs.at(1250, { w: 0.9 }));
    expect(of(r.events, 'containers_sampled')[0]!.util.w!.cpu).toBeCloseTo(0.9, 9);
    expect(r.decisions.map(strip)).toEqual([{ action: 'scale_out', container: 'w', from: 1, to: 2, resource: 'cpu' }]);
    clock.set(5000);
    expect(eng.needsBaseline('vm1', 1500)).toBe(true);
  });

  it('setReplicas corrects the count (failed scale-out) and is clamped', () => {
    const eng = new PolicyEngine(cpuPolicy({ maxReplicas: 4 }), new FakeClock().now);
    eng.setReplicas('w', 9, 'vm1');
    expect(eng.replicas('w')).toBe(4);
    eng.setReplicas('w', 0, 'vm1');
    expect(eng.replicas('w')).toBe(1);
  });

  it('refuses bad configurations', () => {
    const clock = new FakeClock().now;
    expect(() => new PolicyEngine({ policies: [] }, clock)).toThrow(/no resource policies/);
    expect(() => new PolicyEngine({ policies: [{ resource: 'cpu', vmThreshold: 0.5, target: 0 }] }, clock)).toThrow(/target/);
    expect(
      () =>
        new PolicyEngine(
          { policies: [{ resource: 'cpu', vmThreshold: 0.5, target: 0.5 }, { resource: 'cpu', vmThreshold: 0.6, target: 0.5 }] },
          clock,
        ),
    ).toThrow(/two policies/);
    const eng = new PolicyEngine(cpuPolicy(), clock);
    expect(() => eng.observeContainers({ time: new Date(T0).toISOString(), kernel: 'k', sample_us: 0, containers: [] })).toThrow(/observeVm first/);
    expect(() => eng.observeVm({ ...new VmSeries('v', 1).at(0, 0), time: 'yesterday' })).toThrow(/bad sample time/);
  });
});

