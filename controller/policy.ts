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
// Utilisation, per resource, is a fraction:
//   cpu      VM: Δcpu.time / (Δt · vCPUs)        container: Δcpu_usage_ns / (Δt · VM vCPUs)
//   memory   VM: used / assigned                  container: memory_usage_bytes / VM assigned memory
//   disk     (Δread + Δwrite) / Δt / capacities.diskBytesPerSec
//   network  (Δrx + Δtx) / Δt / capacities.netBytesPerSec
// Container utilisation is relative to the VM, so container shares of one resource add up to (about)
// the VM's own utilisation.
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

import type { ContainerSample, Sample } from '../vmi/sample.ts';
import { clamp, EPS, hpaDesired, iso, lsqSlope, parseTime } from './math.ts';
import { counterRate } from '../vmi/rates.ts';
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
  TrendCandidate,
  VmStats,
} from './types.ts';

/** sample times here are in ms (parseTime) */
const MS_PER_S = 1000;

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
    if (config.policies.length === 0) throw new Error('PolicyEngine: no resource policies');
    const seen = new Set<Resource>();
    for (const p of config.policies) {
      if (seen.has(p.resource)) throw new Error(`PolicyEngine: two policies for ${p.resource}`);
      seen.add(p.resource);
      if (!(p.target > 0)) throw new Error(`PolicyEngine: ${p.resource} target must be > 0`);
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
    const caps = this.cfg.capacities;
    for (const p of this.cfg.policies) {
      const r = p.resource;
      if (r === 'memory') {
        if (stats.memory_total_bytes > 0) util.memory = stats.memory_used_bytes / stats.memory_total_bytes;
        continue;
      }
      if (!prev || elapsed === null) continue;
      const l = prev.last;
      if (r === 'cpu') {
        const rate = counterRate(l.cpu_time_ns, stats.cpu_time_ns, elapsed, MS_PER_S);
        if (rate !== null && stats.vcpus > 0) util.cpu = rate / 1e9 / stats.vcpus;
      } else if (r === 'disk') {
        const a = counterRate(l.block_rd_bytes, stats.block_rd_bytes, elapsed, MS_PER_S);
        const b = counterRate(l.block_wr_bytes, stats.block_wr_bytes, elapsed, MS_PER_S);
        if (a !== null && b !== null) util.disk = (a + b) / caps.diskBytesPerSec;
      } else {
        const a = counterRate(l.net_rx_bytes, stats.net_rx_bytes, elapsed, MS_PER_S);
        const b = counterRate(l.net_tx_bytes, stats.net_tx_bytes, elapsed, MS_PER_S);
        if (a !== null && b !== null) util.network = (a + b) / caps.netBytesPerSec;
      }
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
    if (vmName === undefined) throw new Error('observeContainers: no VM observed yet (call observeVm first)');
    const vm = this.vms.get(vmName);
    if (!vm) throw new Error(`observeContainers: VM ${vmName} was never observed (call observeVm first)`);
    const t = parseTime(sample.time);
    const events: ControllerEvent[] = [];
    const decisions: DecisionEvent[] = [];
    const utils = new Map<string, Util>();

    for (const c of sample.containers) {
      const key = containerKey(c);
      const st = this.containerState(key, vmName);
      const u = this.containerUtil(st, c, t, vm.last, now, vmName, key, events);
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
      this.sizeByOwnMetrics(o.key, utils.get(o.key)!, vmName, 'over_threshold', now, events, decisions);
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
        this.apply(chosen.container, vmName, chosen.resource, vmUtil, p.vmTarget ?? p.target, 'trend', now, events, decisions);
      }
    }

    // 3. scaled-out containers not yet evaluated: plain HPA on their own metrics (up or down)
    for (const [key, u] of utils) {
      if (evaluated.has(key)) continue;
      if (this.replicas(key) <= 1) continue;
      this.sizeByOwnMetrics(key, u, vmName, 'hpa', now, events, decisions);
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

  private containerUtil(
    st: ContainerState,
    c: ContainerSample,
    t: number,
    vmStats: VmStats,
    now: number,
    vmName: string,
    key: string,
    events: ControllerEvent[],
  ): Util {
    const u: Util = {};
    const caps = this.cfg.capacities;
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
    for (const p of this.cfg.policies) {
      const r = p.resource;
      if (r === 'memory') {
        if (vmStats.memory_total_bytes > 0) u.memory = c.memory_usage_bytes / vmStats.memory_total_bytes;
        continue;
      }
      if (elapsed === null || !prev) continue;
      const pc = prev.c;
      let v: number | null = null;
      if (r === 'cpu') {
        const rate = counterRate(pc.cpu_usage_ns, c.cpu_usage_ns, elapsed, MS_PER_S);
        if (rate !== null && vmStats.vcpus > 0) v = rate / 1e9 / vmStats.vcpus;
      } else if (r === 'disk') {
        const a = counterRate(pc.io_read_bytes, c.io_read_bytes, elapsed, MS_PER_S);
        const b = counterRate(pc.io_write_bytes, c.io_write_bytes, elapsed, MS_PER_S);
        if (a !== null && b !== null) v = (a + b) / caps.diskBytesPerSec;
      } else {
        const a = counterRate(pc.net_rx_bytes, c.net_rx_bytes, elapsed, MS_PER_S);
        const b = counterRate(pc.net_tx_bytes, c.net_tx_bytes, elapsed, MS_PER_S);
        if (a !== null && b !== null) v = (a + b) / caps.netBytesPerSec;
      }
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
    const H = this.cfg.trendHorizonS;
    const vmUtil = vm.util[r]!;
    const all: TrendCandidate[] = [];
    for (const [key, u] of utils) {
      const v = u[r];
      if (v === undefined || !(v > 0)) continue;
      const slope = lsqSlope(this.containers.get(key)!.history[r] ?? []);
      all.push({ container: key, share: vmUtil > 0 ? v / vmUtil : 0, util: v, slope, projected: Math.max(0, v + slope * H) });
    }
    const cands = all.filter((c) => c.share >= this.cfg.trendMinShare - EPS);
    if (cands.length === 0) {
      return { type: 'no_choice', time: iso(now), vm: vmName, resource: r, vm_util: vmUtil, min_share: this.cfg.trendMinShare, candidates: all };
    }
    cands.sort((a, b) => {
      if (Math.abs(a.projected - b.projected) > EPS) return b.projected - a.projected;
      if (Math.abs(a.slope - b.slope) > EPS) return b.slope - a.slope;
      return cmp(a.container, b.container);
    });
    const c = cands[0]!;
    return { type: 'container_chosen', time: iso(now), vm: vmName, container: c.container, rule: 'trend', resource: r, score: c.projected, candidates: all };
  }

  /** HPA over every resource with a metric: the maximum desired wins (as HPA does with several metrics). */
  private sizeByOwnMetrics(
    key: string,
    u: Util,
    vmName: string,
    reason: string,
    now: number,
    events: ControllerEvent[],
    decisions: DecisionEvent[],
  ): void {
    const current = this.replicas(key);
    let best: { r: Resource; desired: number; metric: number; target: number; within: boolean; ratio: number } | undefined;
    for (const p of this.cfg.policies) {
      const v = u[p.resource];
      if (v === undefined) continue;
      const h = hpaDesired(current, v, p.target, this.cfg.tolerance, this.cfg.minReplicas, this.cfg.maxReplicas);
      // prefer the larger desired; on a tie the larger |ratio - 1| explains it best
      if (!best || h.desired > best.desired || (h.desired === best.desired && Math.abs(h.ratio - 1) > Math.abs(best.ratio - 1) + EPS)) {
        best = { r: p.resource, desired: h.desired, metric: v, target: p.target, within: h.withinTolerance, ratio: h.ratio };
      }
    }
    if (!best) return;
    this.applyDesired(key, vmName, best.r, best.metric, best.target, best.desired, best.within, best.ratio, reason, now, events, decisions);
  }

  private apply(
    key: string,
    vmName: string,
    r: Resource,
    metric: number,
    target: number,
    reason: string,
    now: number,
    events: ControllerEvent[],
    decisions: DecisionEvent[],
  ): void {
    const current = this.replicas(key);
    const h = hpaDesired(current, metric, target, this.cfg.tolerance, this.cfg.minReplicas, this.cfg.maxReplicas);
    this.applyDesired(key, vmName, r, metric, target, h.desired, h.withinTolerance, h.ratio, reason, now, events, decisions);
  }

  private applyDesired(
    key: string,
    vmName: string,
    r: Resource,
    metric: number,
    target: number,
    desired: number,
    within: boolean,
    ratio: number,
    reason: string,
    now: number,
    events: ControllerEvent[],
    decisions: DecisionEvent[],
  ): void {
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
      const d: DecisionEvent = {
        type: 'decision',
        time: iso(now),
        action: 'scale_out',
        vm: vmName,
        container: key,
        from: current,
        to: desired,
        reason: `${reason}: ${r} ${fmt(metric)} vs target ${fmt(target)} (ratio ${fmt(ratio)})`,
        resource: r,
        metric,
        target,
      };
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
      const d: DecisionEvent = {
        type: 'decision',
        time: iso(now),
        action: 'scale_in',
        vm: vmName,
        container: key,
        from: current,
        to: stabilized,
        reason: `${reason}: ${r} ${fmt(metric)} vs target ${fmt(target)}; max recommendation over ${W / 1000} s window = ${stabilized}`,
        resource: r,
        metric,
        target,
      };
      st.replicas = stabilized;
      events.push(d);
      decisions.push(d);
    }
  }
}

function fmt(x: number): string {
  return Number(x.toFixed(4)).toString();
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
