// Small pure helpers: sample times, least-squares slope, HPA sizing. (Counter rates: vmi/rates.ts.)

import { InvalidValueError } from '../common/errors.ts';

/** Slack for float comparisons of ratios built from counter deltas (1e-9 of a ratio is far below noise). */
export const EPS = 1e-9;

/** Parse an ISO-8601 time to ms since the epoch; throws on garbage so a bad sample is never silently used. */
export function parseTime(iso: string): number {
  const t = Date.parse(iso);
  if (!Number.isFinite(t)) throw new InvalidValueError('sample time', `bad sample time: ${JSON.stringify(iso)}`);
  return t;
}

/**
 * Least-squares slope dy/dx of the points (x in seconds). Fewer than two points, or all x equal: 0.
 */
export function lsqSlope(points: readonly { x: number; y: number }[]): number {
  const n = points.length;
  if (n < 2) return 0;
  let sx = 0;
  let sy = 0;
  for (const p of points) {
    sx += p.x;
    sy += p.y;
  }
  const mx = sx / n;
  const my = sy / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.x - mx) * (p.y - my);
    den += (p.x - mx) * (p.x - mx);
  }
  return den === 0 ? 0 : num / den;
}

export interface HpaResult {
  ratio: number;
  /** true when |ratio - 1| <= tolerance: HPA keeps the current count */
  withinTolerance: boolean;
  desired: number;
}

/**
 * Kubernetes HPA sizing: desired = ceil(current * metric / target); no change while
 * |metric/target - 1| <= tolerance. Result clamped to [min, max].
 */
export function hpaDesired(
  current: number,
  metric: number,
  target: number,
  tolerance: number,
  min: number,
  max: number,
): HpaResult {
  if (!(target > 0)) throw new InvalidValueError('HPA target', `must be > 0, got ${target}`);
  const ratio = metric / target;
  if (Math.abs(ratio - 1) <= tolerance + EPS) {
    return { ratio, withinTolerance: true, desired: clamp(current, min, max) };
  }
  // ceil with a little slack so 2 * 0.6/0.3 = 4.000000000000001 stays 4
  const desired = Math.ceil(current * ratio - EPS);
  return { ratio, withinTolerance: false, desired: clamp(desired, min, max) };
}

export function clamp(v: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, v));
}

export function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/** Lexicographic order of two names (the engine's tie-break). */
export function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
