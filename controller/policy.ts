// The policy engine: pure and deterministic. Time for cooldowns, windows and event stamps comes from an
// injected clock; rates come from the timestamps inside the samples (real elapsed time, never the nominal
// interval). No I/O: the Autoscaler (autoscaler.ts) feeds it and carries out its decisions.
//
// Two-level monitoring (paper sec. 3): `observeVm` runs every interval on cheap VM-level stats
// (libvirt domstats / /proc). Only when it reports `sampleContainers` does the caller take a VMI sample of
// the containers and pass it to `observeContainers`. That happens when the VM is hot on some resource, or
// when a container of this VM has been scaled out (its replicas must be watched for scale-in; the paper
// leaves scale-in as future work, HPA needs the metric every sync).
//
// Containers are keyed by name (else id): one key is one service, so names must be unique across the
// VMs one engine watches.
//
// Utilisation, per resource, is a fraction of the VM's capacity, computed by one function for a VM and
// its containers alike (utilisation.ts), so container shares of one resource add up to (about) the
// VM's own utilisation.
//
// Sizing follows Kubernetes HPA: desired = ceil(current · metric / target), no change while
// |metric/target − 1| <= tolerance (0.1), scale-down uses the maximum recommendation over the
// stabilisation window (default 300 s), several resources → the maximum desired over them.
// Where Ciel differs from HPA, and why:
//  * `current` counts the origin container plus its scale-out VMs; the metric is the origin container's
//    utilisation as seen by VMI. With the balancer splitting requests evenly this stands for the
//    per-replica average HPA uses, without monitoring every replica.
//  * A container at one replica is only scaled out when it is chosen: over its own threshold, or (VM hot
//    and no container over threshold) picked by the trend rule below. Then, since no single container
//    explains the load, its size comes from the VM's ratio: desired = ceil(current · vmUtil / vmTarget).
//  * Scale-up has a per-container cooldown (a new VM needs ~10-15 s under TCG to serve; HPA v2 has
//    no scale-up cooldown but a 0 s up-window, which would stack clones while the first boots).
//
// Container choice rule (the README quotes this):
//  1. Every container whose utilisation of some resource is strictly above its own threshold
//     (`containerThresholds[name]`, else `containerThreshold`, else `vmThreshold`) is hot and is sized by
//     HPA on its own metrics; they are considered in decreasing order of utilisation/threshold.
//  2. If none is over its threshold but the VM is hot, take the hot resource r with the largest
//     VM utilisation/threshold ratio. Candidates are the containers whose utilisation u of r is at least
//     trendMinShare (default 0.5) of the VM's (a small share does not explain why the VM is hot, and
//     moving it relieves little); none: a `no_choice` event, no decision. For each candidate, compute the
//     least-squares slope s (per second, x = the real sample times) of its utilisation of r over its last
//     N samples (trendPoints, default 5) and its projected utilisation p = max(0, u + s · H), with H the
//     expected time until a new replica serves (trendHorizonS, default 15 s). Choose the container with
//     the largest p; ties go to the larger slope, then to the lexicographically smaller name. Scaling
//     out k → k+1 replicas moves 1/(k+1) of that container's load off the VM at the time the replica is
//     ready, so the container with the largest projected load (= its share of the VM's load, corrected
//     by its trend) is the one whose scale-out relieves the VM most.

import { InvalidValueError, VmError } from '../common/errors.ts';
import type { ContainerSample, Sample } from '../vmi/sample.ts';
import { clamp, cmp, EPS, hpaDesired, iso, parseTime, type HpaResult } from './math.ts';
import { rankByTrend } from './trend-rule.ts';
import { containerUsage, utilisation, vmCapacity, vmUsage } from './utilisation.ts';
import type {
  Capacities,
  Clock,
  ContainerChosenEvent,
  ControllerEvent,
  NoChoiceEvent,
  DecisionEvent,
  PolicyConfig,
  Resource,
  ResourcePolicy,
  VmStats,
} from './types.ts';

type Util = Partial<Record<Resource, number>>;

export interface VmCheckResult {
  events: ControllerEvent[];
  /** resources over their VM threshold */
  hot: Resource[];
  util: Util;
  /** true: take a container-level (VMI) sample now and pass it to observeContainers */
  sampleContainers: boolean;
  /** hot now, cool (or not yet rated) at the previous check */
  becameHot: boolean;
}

/** One sizing decision's input: a container, the metric it is sized on, and HPA's recommendation. */
interface SizingInput {
  container: string;
  vm: string;
  resource: Resource;
  /** utilisation the recommendation is based on, and its target */
  metric: number;
  target: number;
  /** why it is sized (over_threshold, trend, hpa): the decision's reason starts with it */
  reason: string;
  hpa: HpaResult;
}

/** Where one container step's events and decisions go, and its clock time. */
interface StepOutput {
  now: number;
  events: ControllerEvent[];
  decisions: DecisionEvent[];
}

export interface ContainerStepResult {
  events: ControllerEvent[];
  decisions: DecisionEvent[];
}

interface VmState {
  last: VmStats;
  lastT: number;
  util: Util;
  hot: Resource[];
}

interface ContainerState {
  vm: string;
  last?: { t: number; c: ContainerSample };
  /** recent utilisation points per resource: x = sample time in s, y = utilisation */
  history: Partial<Record<Resource, { x: number; y: number }[]>>;
  replicas: number;
  lastScaleUp?: number;
  /** HPA recommendations (clock ms, desired) for the scale-down stabilisation window */
  recs: { t: number; desired: number }[];
}

const DEFAULTS = {
  tolerance: 0.1,
  scaleUpCooldownMs: 30_000,
  scaleDownWindowMs: 300_000,
  minReplicas: 1,
  maxReplicas: 10,
  trendPoints: 5,
  trendHorizonS: 15,
  trendMinShare: 0.5,
  maxRateGapMs: 10_000,
};

/** Key of a container: its friendly name when known, else its id. */
export function containerKey(c: ContainerSample): string {
  return c.name ?? c.id;
}

export class PolicyEngine {
  private readonly cfg: typeof DEFAULTS & { policies: ResourcePolicy[]; capacities: Capacities };
  private readonly vms = new Map<string, VmState>();
  private readonly containers = new Map<string, ContainerState>();
  private lastVm?: string;

  constructor(
    config: PolicyConfig,
    private readonly clock: Clock,
  ) {
    if (config.policies.length === 0) throw new InvalidValueError('PolicyEngine policies', 'no resource policies');
    const seen = new Set<Resource>();
    for (const p of config.policies) {
      if (seen.has(p.resource)) throw new InvalidValueError('PolicyEngine policies', `two policies for ${p.resource}`);
      seen.add(p.resource);
      if (!(p.target > 0)) throw new InvalidValueError(`PolicyEngine ${p.resource} target`, `must be > 0 (got ${p.target})`);
    }
    this.cfg = {
      ...DEFAULTS,
      ...stripUndefined(config),
      policies: config.policies,
      capacities: {
        diskBytesPerSec: config.capacities?.diskBytesPerSec ?? 100 * 1024 * 1024,
        netBytesPerSec: config.capacities?.netBytesPerSec ?? 125 * 1000 * 1000,
      },
    };
  }

  /** Current replica count of a container (1 = only the origin container). */
  replicas(container: string): number {
    return this.containers.get(container)?.replicas ?? 1;
  }

  /** Correct the replica count (e.g. a scale-out failed, or replicas were found at startup). */
  setReplicas(container: string, n: number, vm?: string): void {
    const st = this.containerState(container, vm ?? this.lastVm ?? '');
    st.replicas = clamp(n, this.cfg.minReplicas, this.cfg.maxReplicas);
  }

  /** VM-level check; run every interval. */
  observeVm(stats: VmStats): VmCheckResult {
    const now = this.clock();
    const t = parseTime(stats.time);
    const prev = this.vms.get(stats.vm);
    const events: ControllerEvent[] = [];
    const util: Util = {};
    const elapsed = prev ? t - prev.lastT : null;
    const cap = vmCapacity(stats, this.cfg.capacities);
    const cur = vmUsage(stats);
    const before = prev ? vmUsage(prev.last) : undefined;
    for (const { resource: r } of this.cfg.policies) {
      // a VM counter that went backwards (reset) gives no utilisation this time; the baseline moves on
      const v = utilisation(r, cur, before, elapsed, cap);
      if (typeof v === 'number') util[r] = v;
    }
    events.push({ type: 'vm_check', time: iso(now), vm: stats.vm, util, elapsed_ms: elapsed });
    if (elapsed !== null && elapsed <= 0) {
      events.push({ type: 'no_rate', time: iso(now), vm: stats.vm, reason: `non-increasing time (${elapsed} ms)` });
    }
    const hot: Resource[] = [];
    for (const p of this.cfg.policies) {
      const v = util[p.resource];
      if (v !== undefined && v > p.vmThreshold) {
        hot.push(p.resource);
        events.push({ type: 'vm_hot', time: iso(now), vm: stats.vm, resource: p.resource, value: v, threshold: p.vmThreshold });
      }
    }
    if (prev && prev.hot.length > 0 && hot.length === 0) events.push({ type: 'vm_cool', time: iso(now), vm: stats.vm });
    // keep the old baseline when time did not advance, so the next reading gives a real rate
    const keep = prev && elapsed !== null && elapsed <= 0;
    this.vms.set(stats.vm, {
      last: keep ? prev.last : stats,
      lastT: keep ? prev.lastT : t,
      util,
      hot,
    });
    this.lastVm = stats.vm;
    const scaledOut = [...this.containers.values()].some((c) => c.vm === stats.vm && c.replicas > 1);
    const becameHot = hot.length > 0 && !(prev && prev.hot.length > 0);
    return { events, hot, util, sampleContainers: hot.length > 0 || scaledOut, becameHot };
  }

  /**
   * True when no container of `vm` has a counter baseline younger than maxAgeMs (clock time): the first
   * container sample after a cool period would give no rate (or one averaged over the cool period).
   * The Autoscaler then takes a baseline sample (primeContainers), waits a little and samples again.
   */
  needsBaseline(vm: string, maxAgeMs: number): boolean {
    const now = this.clock();
    for (const c of this.containers.values()) {
      if (c.vm === vm && c.last && c.last.t >= now - maxAgeMs) return false;
    }
    return true;
  }

  /** Record counters only (no decisions): the baseline for the next observeContainers. */
  primeContainers(sample: Sample): void {
    const vmName = sample.vm ?? this.lastVm ?? '';
    const t = parseTime(sample.time);
    for (const c of sample.containers) {
      const st = this.containerState(containerKey(c), vmName);
      if (st.last && (c.cpu_usage_ns < st.last.c.cpu_usage_ns || t - st.last.t > this.cfg.maxRateGapMs)) st.history = {};
      st.last = { t, c };
    }
  }

  /** Container-level step: a VMI sample of the VM's containers, taken because observeVm asked for it. */
  observeContainers(sample: Sample): ContainerStepResult {
    const now = this.clock();
    const vmName = sample.vm ?? this.lastVm;
    if (vmName === undefined) throw new InvalidValueError('observeContainers', 'no VM observed yet (call observeVm first)');
    const vm = this.vms.get(vmName);
    if (!vm) throw new VmError(vmName, 'container sample of a VM never observed (call observeVm first)');
    const t = parseTime(sample.time);
    const events: ControllerEvent[] = [];
    const decisions: DecisionEvent[] = [];
    const out: StepOutput = { now, events, decisions };
    const utils = new Map<string, Util>();

    for (const c of sample.containers) {
      const key = containerKey(c);
      const st = this.containerState(key, vmName);
      const u = this.containerUtil(key, st, c, t, { name: vmName, stats: vm.last }, out);
      st.last = { t, c };
      utils.set(key, u);
      for (const [r, v] of Object.entries(u) as [Resource, number][]) {
        const h = (st.history[r] ??= []);
        h.push({ x: t / 1000, y: v });
        while (h.length > this.cfg.trendPoints) h.shift();
      }
    }
    events.push({
      type: 'containers_sampled',
      time: iso(now),
      vm: vmName,
      reason: vm.hot.length > 0 ? 'vm_hot' : 'scaled_out',
      containers: sample.containers.length,
      util: Object.fromEntries(utils),
    });

    // 1. containers over their own threshold
    const over: { key: string; resource: Resource; score: number }[] = [];
    for (const [key, u] of utils) {
      let best: { resource: Resource; score: number } | undefined;
      for (const p of this.cfg.policies) {
        const v = u[p.resource];
        if (v === undefined) continue;
        const thr = this.threshold(p, key);
        if (v > thr) {
          events.push({ type: 'container_hot', time: iso(now), vm: vmName, container: key, resource: p.resource, value: v, threshold: thr });
          const score = v / thr;
          if (!best || score > best.score + EPS) best = { resource: p.resource, score };
        }
      }
      if (best) over.push({ key, ...best });
    }
    over.sort((a, b) => b.score - a.score || cmp(a.key, b.key));

    const evaluated = new Set<string>();
    for (const o of over) {
      events.push({ type: 'container_chosen', time: iso(now), vm: vmName, container: o.key, rule: 'over_threshold', resource: o.resource, score: o.score });
      this.sizeByOwnMetrics(o.key, utils.get(o.key)!, vmName, 'over_threshold', out);
      evaluated.add(o.key);
    }

    // 2. VM hot, nobody over threshold: trend rule
    if (over.length === 0 && vm.hot.length > 0) {
      const chosen = this.trendChoice(vm, utils, vmName, now);
      if (chosen) events.push(chosen);
      if (chosen?.type === 'container_chosen') {
        const p = this.policy(chosen.resource);
        const vmUtil = vm.util[chosen.resource]!;
        evaluated.add(chosen.container);
        this.applyDesired(this.sizing(chosen.container, vmName, chosen.resource, vmUtil, p.vmTarget ?? p.target, 'trend'), out);
      }
    }

    // 3. scaled-out containers not yet evaluated: plain HPA on their own metrics (up or down)
    for (const [key, u] of utils) {
      if (evaluated.has(key)) continue;
      if (this.replicas(key) <= 1) continue;
      this.sizeByOwnMetrics(key, u, vmName, 'hpa', out);
    }
    return { events, decisions };
  }

  // ---------------------------------------------------------------------------------------------

  private containerState(key: string, vm: string): ContainerState {
    let st = this.containers.get(key);
    if (!st) {
      st = { vm, history: {}, replicas: 1, recs: [] };
      this.containers.set(key, st);
    }
    return st;
  }

  private policy(r: Resource): ResourcePolicy {
    return this.cfg.policies.find((p) => p.resource === r)!;
  }

  private threshold(p: ResourcePolicy, key: string): number {
    return p.containerThresholds?.[key] ?? p.containerThreshold ?? p.vmThreshold;
  }

  /** Utilisation of one container at sample time `t` against its previous sample (no_rate events say why none). */
  private containerUtil(key: string, st: ContainerState, c: ContainerSample, t: number, vm: { name: string; stats: VmStats }, out: StepOutput): Util {
    const { now, events } = out;
    const vmName = vm.name;
    const vmStats = vm.stats;
    const u: Util = {};
    const prev = st.last;
    let elapsed: number | null = null;
    if (!prev) {
      events.push({ type: 'no_rate', time: iso(now), vm: vmName, container: key, reason: 'first sample (baseline)' });
    } else if (t - prev.t > this.cfg.maxRateGapMs) {
      events.push({ type: 'no_rate', time: iso(now), vm: vmName, container: key, reason: `baseline too old (${t - prev.t} ms)` });
    } else if (t - prev.t <= 0) {
      events.push({ type: 'no_rate', time: iso(now), vm: vmName, container: key, reason: `non-increasing time (${t - prev.t} ms)` });
    } else {
      elapsed = t - prev.t;
    }
    const cap = vmCapacity(vmStats, this.cfg.capacities);
    const cur = containerUsage(c);
    const before = prev && elapsed !== null ? containerUsage(prev.c) : undefined;
    for (const { resource: r } of this.cfg.policies) {
      const v = utilisation(r, cur, before, elapsed, cap);
      if (v === undefined) continue;
      if (v === null) {
        events.push({ type: 'no_rate', time: iso(now), vm: vmName, container: key, reason: `${r} counter went backwards (restart?)` });
        st.history[r] = [];
      } else {
        u[r] = v;
      }
    }
    return u;
  }

  private trendChoice(vm: VmState, utils: Map<string, Util>, vmName: string, now: number): ContainerChosenEvent | NoChoiceEvent | undefined {
    // the hot resource with the largest VM utilisation/threshold ratio
    let r: Resource | undefined;
    let bestRatio = -Infinity;
    for (const res of vm.hot) {
      const ratio = vm.util[res]! / this.policy(res).vmThreshold;
      if (ratio > bestRatio + EPS) {
        bestRatio = ratio;
        r = res;
      }
    }
    if (!r) return undefined;
    const vmUtil = vm.util[r]!;
    const res = r;
    const { chosen: c, all } = rankByTrend({
      vmUtil,
      containers: [...utils].map(([key, u]) => ({ key, util: u[res], history: this.containers.get(key)!.history[res] ?? [] })),
      horizonS: this.cfg.trendHorizonS,
      minShare: this.cfg.trendMinShare,
    });
    if (!c) return { type: 'no_choice', time: iso(now), vm: vmName, resource: r, vm_util: vmUtil, min_share: this.cfg.trendMinShare, candidates: all };
    return { type: 'container_chosen', time: iso(now), vm: vmName, container: c.container, rule: 'trend', resource: r, score: c.projected, candidates: all };
  }

  /** HPA over every resource with a metric: the maximum desired wins (as HPA does with several metrics). */
  private sizeByOwnMetrics(container: string, u: Util, vm: string, reason: string, out: StepOutput): void {
    let best: SizingInput | undefined;
    for (const p of this.cfg.policies) {
      const v = u[p.resource];
      if (v === undefined) continue;
      const s = this.sizing(container, vm, p.resource, v, p.target, reason);
      // prefer the larger desired; on a tie the larger |ratio - 1| explains it best
      const h = s.hpa;
      if (!best || h.desired > best.hpa.desired || (h.desired === best.hpa.desired && Math.abs(h.ratio - 1) > Math.abs(best.hpa.ratio - 1) + EPS)) best = s;
    }
    if (best) this.applyDesired(best, out);
  }

  /** HPA's recommendation for `container` on one metric. */
  private sizing(container: string, vm: string, resource: Resource, metric: number, target: number, reason: string): SizingInput {
    const hpa = hpaDesired(this.replicas(container), metric, target, this.cfg.tolerance, this.cfg.minReplicas, this.cfg.maxReplicas);
    return { container, vm, resource, metric, target, reason, hpa };
  }

  /** Act on a recommendation: cooldown for scale-up, stabilisation window for scale-down. */
  private applyDesired(s: SizingInput, out: StepOutput): void {
    const { container: key, vm: vmName, resource: r, target } = s;
    const { desired, withinTolerance: within, ratio } = s.hpa;
    const { now, events, decisions } = out;
    const st = this.containerState(key, vmName);
    const current = st.replicas;
    const W = this.cfg.scaleDownWindowMs;
    st.recs.push({ t: now, desired });
    st.recs = st.recs.filter((x) => x.t > now - W);
    if (within) {
      events.push({ type: 'tolerance_skip', time: iso(now), container: key, resource: r, ratio, current });
      return;
    }
    if (desired > current) {
      if (st.lastScaleUp !== undefined && now < st.lastScaleUp + this.cfg.scaleUpCooldownMs) {
        events.push({ type: 'cooldown_skip', time: iso(now), container: key, current, desired, until: iso(st.lastScaleUp + this.cfg.scaleUpCooldownMs) });
        return;
      }
      const d = decision(s, now, 'scale_out', current, desired, `vs target ${fmt(target)} (ratio ${fmt(ratio)})`);
      st.replicas = desired;
      st.lastScaleUp = now;
      events.push(d);
      decisions.push(d);
      return;
    }
    if (desired < current) {
      const stabilized = Math.max(...st.recs.map((x) => x.desired));
      if (stabilized >= current) {
        events.push({ type: 'stabilization_hold', time: iso(now), container: key, current, recommended: desired, stabilized, window_ms: W });
        return;
      }
      const d = decision(s, now, 'scale_in', current, stabilized, `vs target ${fmt(target)}; max recommendation over ${W / 1000} s window = ${stabilized}`);
      st.replicas = stabilized;
      events.push(d);
      decisions.push(d);
    }
  }
}

/** The decision event for a recommendation acted on; `why` follows the metric in its reason. */
function decision(s: SizingInput, now: number, action: DecisionEvent['action'], from: number, to: number, why: string): DecisionEvent {
  const { container, vm, resource, metric, target, reason } = s;
  return { type: 'decision', time: iso(now), action, vm, container, from, to, reason: `${reason}: ${resource} ${fmt(metric)} ${why}`, resource, metric, target };
}

function fmt(x: number): string {
  return Number(x.toFixed(4)).toString();
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
