// Utilisation of one resource as a fraction of the VM's capacity: one formula for a VM and for a
// container inside it, so that container shares of a resource add up to (about) the VM's own.
//   cpu      Δcpu ns / (Δt · VM vCPUs)
//   memory   bytes in use / VM assigned memory
//   disk     (Δread + Δwrite) / Δt / capacities.diskBytesPerSec
//   network  (Δrx + Δtx) / Δt / capacities.netBytesPerSec

import type { ContainerSample } from '../vmi/sample.ts';
import { counterRate } from '../vmi/rates.ts';
import type { Capacities, Resource, VmStats } from './types.ts';

/** The counters a utilisation is computed from (cumulative except memory), for a VM or a container. */
/** elapsed times here are in ms (sample times through parseTime) */
const MS_PER_S = 1000;

export interface Usage {
  cpuNs: number;
  memoryBytes: number;
  diskReadBytes: number;
  diskWriteBytes: number;
  netRxBytes: number;
  netTxBytes: number;
}

export function vmUsage(s: VmStats): Usage {
  return {
    cpuNs: s.cpu_time_ns,
    memoryBytes: s.memory_used_bytes,
    diskReadBytes: s.block_rd_bytes,
    diskWriteBytes: s.block_wr_bytes,
    netRxBytes: s.net_rx_bytes,
    netTxBytes: s.net_tx_bytes,
  };
}

export function containerUsage(c: ContainerSample): Usage {
  return {
    cpuNs: c.cpu_usage_ns,
    memoryBytes: c.memory_usage_bytes,
    diskReadBytes: c.io_read_bytes,
    diskWriteBytes: c.io_write_bytes,
    netRxBytes: c.net_rx_bytes,
    netTxBytes: c.net_tx_bytes,
  };
}

/** Capacity of the VM the usage is measured against. */
export interface Capacity extends Capacities {
  vcpus: number;
  memoryBytes: number;
}

export function vmCapacity(s: VmStats, caps: Capacities): Capacity {
  return { ...caps, vcpus: s.vcpus, memoryBytes: s.memory_total_bytes };
}

/**
 * Utilisation of `r`. `prev` and `elapsedMs` (real time between the two readings) are needed for the
 * rate resources. undefined: not computable yet (no previous reading, or no memory size known);
 * null: no rate although there is a previous reading (a counter went backwards, time did not advance,
 * or no vCPUs) — the caller re-baselines.
 */
export function utilisation(r: Resource, cur: Usage, prev: Usage | undefined, elapsedMs: number | null, cap: Capacity): number | null | undefined {
  if (r === 'memory') return cap.memoryBytes > 0 ? cur.memoryBytes / cap.memoryBytes : undefined;
  if (!prev || elapsedMs === null) return undefined;
  const rate = (a: number, b: number) => counterRate(a, b, elapsedMs, MS_PER_S);
  if (r === 'cpu') {
    const ns = rate(prev.cpuNs, cur.cpuNs);
    return ns !== null && cap.vcpus > 0 ? ns / 1e9 / cap.vcpus : null;
  }
  const [a, b, per] =
    r === 'disk'
      ? [rate(prev.diskReadBytes, cur.diskReadBytes), rate(prev.diskWriteBytes, cur.diskWriteBytes), cap.diskBytesPerSec]
      : [rate(prev.netRxBytes, cur.netRxBytes), rate(prev.netTxBytes, cur.netTxBytes), cap.netBytesPerSec];
  return a !== null && b !== null ? (a + b) / per : null;
}
