// Turns consecutive cumulative Samples (one stream per VM) into per-container rates, and the one
// counter-rate helper (counterRate) the controller's policy uses too.
//
// Rates are computed over the real elapsed time between the two sample timestamps (parsed to the
// nanosecond), never over an assumed interval: a late sample must not show CPU > 100 %.
// A counter that went backwards (guest reboot, container restarted under the same id) gives no rate
// for that counter in that step (null), never a negative one; the next step is measured from the new value.

import type { ContainerSample, Sample } from './sample.ts';

export interface ContainerRates {
  id: string;
  cgroup: string;
  name?: string;
  /** CPU use over the step, 100 = one CPU busy the whole time; null on first sight or counter reset */
  cpuPercent: number | null;
  /** gauges, as sampled */
  memoryBytes: number;
  memoryRssBytes: number;
  memoryCacheBytes: number;
  pids: number;
  /** bytes per second over the step; null on first sight or counter reset */
  diskReadBps: number | null;
  diskWriteBps: number | null;
  netRxBps: number | null;
  netTxBps: number | null;
}

export interface VmRates {
  /** VM name ('' when the sample carries none) */
  vm: string;
  /** timestamp of the newer sample */
  time: string;
  /** seconds between the two samples the rates come from; null for the first sample of a VM */
  elapsedSeconds: number | null;
  containers: ContainerRates[];
  /** container ids seen for the first time in this sample */
  appeared: string[];
  /** container ids present in the previous sample and absent now */
  disappeared: string[];
}

/**
 * Parse an ISO-8601 timestamp to nanoseconds since the epoch, keeping sub-millisecond digits
 * (Date.parse alone would drop them).
 */
export function parseTimeNs(iso: string): bigint {
  const m = /^(.*T\d\d:\d\d:\d\d)(?:[.,](\d+))?(Z|[+-]\d\d:?\d\d)?$/i.exec(iso.trim());
  if (!m) throw new Error(`bad sample time ${JSON.stringify(iso)}`);
  const whole = Date.parse(m[1] + (m[3] ?? 'Z'));
  if (Number.isNaN(whole)) throw new Error(`bad sample time ${JSON.stringify(iso)}`);
  const frac = (m[2] ?? '').slice(0, 9).padEnd(9, '0');
  return BigInt(whole) * 1_000_000n + BigInt(frac);
}

interface Prev {
  timeNs: bigint;
  byId: Map<string, ContainerSample>;
}

/** key of a container within one VM: the Docker id, or the cgroup path for non-Docker cgroups */
function keyOf(c: ContainerSample): string {
  return c.id || c.cgroup;
}

/**
 * Rate of a cumulative counter per second, over the real elapsed time between two readings, given in
 * any unit: `unitsPerSecond` says how many make a second (1e9 for ns, 1000 for ms). Null when no rate
 * can be given: no positive elapsed time, or a counter that went backwards (container restarted, VM
 * rebooted: the caller re-baselines) or is not a finite number.
 */
export function counterRate(prev: number, cur: number, elapsed: number, unitsPerSecond: number): number | null {
  if (!(elapsed > 0)) return null;
  const d = cur - prev;
  if (!(d >= 0) || !Number.isFinite(d)) return null;
  return (d * unitsPerSecond) / elapsed;
}

/** bytes per second between two samples' counters (null on first sight) */
function rate(cur: number, prev: number | undefined, elapsedNs: number): number | null {
  return prev === undefined ? null : counterRate(prev, cur, elapsedNs, 1e9);
}

export class RateTracker {
  private readonly prev = new Map<string, Prev>();

  /** Feed the next sample of a VM; returns the rates since that VM's previous sample. */
  update(sample: Sample): VmRates {
    const vm = sample.vm ?? '';
    const timeNs = parseTimeNs(sample.time);
    const before = this.prev.get(vm);
    // A sample not later than the previous one (clock step, duplicate line) gives no rates;
    // it becomes the new baseline.
    const elapsedNs = before && timeNs > before.timeNs ? timeNs - before.timeNs : null;
    const elapsedS = elapsedNs === null ? null : Number(elapsedNs) / 1e9;

    const byId = new Map<string, ContainerSample>();
    const appeared: string[] = [];
    const containers: ContainerRates[] = [];
    for (const c of sample.containers) {
      const key = keyOf(c);
      byId.set(key, c);
      const p = before?.byId.get(key);
      if (!p) appeared.push(key);
      const q = elapsedNs !== null ? p : undefined;
      const ns = elapsedNs === null ? 1 : Number(elapsedNs);
      containers.push({
        id: c.id,
        cgroup: c.cgroup,
        ...(c.name !== undefined ? { name: c.name } : {}),
        // CPU ns per elapsed ns, as a percentage of one CPU
        cpuPercent: q ? counterRate(q.cpu_usage_ns, c.cpu_usage_ns, ns, 100) : null,
        memoryBytes: c.memory_usage_bytes,
        memoryRssBytes: c.memory_rss_bytes,
        memoryCacheBytes: c.memory_cache_bytes,
        pids: c.pids,
        diskReadBps: rate(c.io_read_bytes, q?.io_read_bytes, ns),
        diskWriteBps: rate(c.io_write_bytes, q?.io_write_bytes, ns),
        netRxBps: rate(c.net_rx_bytes, q?.net_rx_bytes, ns),
        netTxBps: rate(c.net_tx_bytes, q?.net_tx_bytes, ns),
      });
    }
    const disappeared = before ? [...before.byId.keys()].filter((k) => !byId.has(k)) : [];
    this.prev.set(vm, { timeNs, byId });
    return { vm, time: sample.time, elapsedSeconds: elapsedS, containers, appeared, disappeared };
  }

  /** Drop the state of a VM (it was removed from the configuration). */
  forget(vm: string): void {
    this.prev.delete(vm);
  }

  /** VMs with state. */
  vms(): string[] {
    return [...this.prev.keys()];
  }
}
