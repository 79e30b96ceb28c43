// Rule 2 of the container choice (policy.ts): the VM is hot on resource r and no container is over its
// own threshold. Candidates are the containers with at least `minShare` of the VM's utilisation of r;
// each is projected `horizonS` ahead along the least-squares slope of its recent utilisation, and the
// largest projection wins (ties: the larger slope, then the smaller name). Its scale-out moves the
// largest expected load off the VM by the time the replica serves.

import { cmp, EPS, lsqSlope } from './math.ts';
import type { TrendCandidate } from './types.ts';

export interface TrendInput {
  /** the VM's utilisation of the resource */
  vmUtil: number;
  /** every sampled container: its utilisation of the resource (undefined: no rate yet) and recent points */
  containers: readonly { key: string; util: number | undefined; history: readonly { x: number; y: number }[] }[];
  /** expected time until a new replica serves, s */
  horizonS: number;
  /** least share of the VM's utilisation a candidate must carry */
  minShare: number;
}

/** `all`: every container with a positive utilisation (for the event); `chosen`: none when no candidate. */
export function rankByTrend(i: TrendInput): { chosen: TrendCandidate | undefined; all: TrendCandidate[] } {
  const all: TrendCandidate[] = [];
  for (const c of i.containers) {
    const v = c.util;
    if (v === undefined || !(v > 0)) continue;
    const slope = lsqSlope(c.history);
    all.push({ container: c.key, share: i.vmUtil > 0 ? v / i.vmUtil : 0, util: v, slope, projected: Math.max(0, v + slope * i.horizonS) });
  }
  const cands = all.filter((c) => c.share >= i.minShare - EPS);
  cands.sort((a, b) => {
    if (Math.abs(a.projected - b.projected) > EPS) return b.projected - a.projected;
    if (Math.abs(a.slope - b.slope) > EPS) return b.slope - a.slope;
    return cmp(a.container, b.container);
  });
  return { chosen: cands[0], all };
}
