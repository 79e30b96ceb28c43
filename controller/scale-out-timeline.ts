// Detect/decide/clone/boot/ready times of one scale-out, from the controller's events (the demo, the
// scaling bench).

import type { ControllerEvent } from './types.ts';

export interface TimedEvent {
  /** host wall clock (ms since the epoch) when the event was emitted */
  at: number;
  e: ControllerEvent;
}

export interface ScaleOutTimeline {
  container: string;
  replica: string;
  pooled: boolean;
  /** load crossed the threshold → first VM-level detection (vm_hot) */
  detect_ms: number;
  /** detection → scale-out decision (container-level sample, choice, sizing) */
  decide_ms: number;
  /** provisioner: disk clone + define (0 when pooled) */
  clone_ms: number;
  /** provisioner: start/resume until the replica's ready line */
  boot_ms: number;
  /** end to end: load crossed the threshold → replica registered with the balancer (serving) */
  ready_ms: number;
  /** wall times (ms since the epoch) of the four milestones */
  at: { crossed: number; detected: number; decided: number; ready: number };
}

/**
 * The first scale-out of `container` after `crossedAt` (host ms): detection = the first vm_hot of the
 * decision's VM at or after crossedAt (else the container_hot just before the decision), decision =
 * the scale_out decision, ready = its scaled_out event (emitted after the balancer registered it).
 * Returns undefined while the scale-out has not completed.
 */
export function timeline(events: readonly TimedEvent[], container: string, crossedAt: number): ScaleOutTimeline | undefined {
  const after = events.filter((x) => x.at >= crossedAt);
  const dec = after.find((x) => x.e.type === 'decision' && x.e.action === 'scale_out' && x.e.container === container);
  if (!dec || dec.e.type !== 'decision') return undefined;
  const vm = dec.e.vm;
  const det =
    after.find((x) => x.e.type === 'vm_hot' && x.e.vm === vm && x.at <= dec.at) ??
    after.find((x) => x.e.type === 'container_hot' && x.e.container === container && x.at <= dec.at) ??
    dec;
  const out = after.find((x) => x.at >= dec.at && x.e.type === 'scaled_out' && x.e.container === container);
  if (!out || out.e.type !== 'scaled_out') return undefined;
  return {
    container,
    replica: out.e.replica ?? '',
    pooled: out.e.pooled ?? false,
    detect_ms: det.at - crossedAt,
    decide_ms: dec.at - det.at,
    clone_ms: out.e.clone_ms ?? 0,
    boot_ms: out.e.boot_ms ?? 0,
    ready_ms: out.at - crossedAt,
    at: { crossed: crossedAt, detected: det.at, decided: dec.at, ready: out.at },
  };
}
