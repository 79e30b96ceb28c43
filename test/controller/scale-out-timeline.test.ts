// controller/scale-out-timeline.ts: detect / decide / clone / boot / ready of one scale-out, from recorded events.
import { describe, expect, it } from 'vitest';
import type { ControllerEvent } from '../../controller/types.ts';
import { timeline, type TimedEvent } from '../../controller/scale-out-timeline.ts';

const T = 1_800_000_000_000;
type NoTime<E> = E extends unknown ? Omit<E, 'time'> : never;
const ev = (dt: number, e: NoTime<ControllerEvent>): TimedEvent => ({ at: T + dt, e: { ...e, time: new Date(T + dt).toISOString() } as ControllerEvent });

describe('timeline()', () => {
  const events: TimedEvent[] = [
    ev(-500, { type: 'vm_hot', vm: 'o', resource: 'cpu', value: 0.4, threshold: 0.35 }), // before the crossing: ignored
    ev(120, { type: 'vm_check', vm: 'o', util: { cpu: 0.5 }, elapsed_ms: 100 }),
    ev(120, { type: 'vm_hot', vm: 'o', resource: 'cpu', value: 0.5, threshold: 0.35 }),
    ev(370, { type: 'container_hot', vm: 'o', container: 'web', resource: 'cpu', value: 0.7, threshold: 0.45 }),
    ev(371, { type: 'decision', action: 'scale_out', vm: 'o', container: 'web', from: 1, to: 2, reason: 'r', resource: 'cpu', metric: 0.7, target: 0.4 }),
    ev(12_500, { type: 'scaled_out', container: 'web', replica: 'ciel-web-1', pooled: false, clone_ms: 40.5, boot_ms: 12_000 }),
  ];
  it('splits detect / decide / clone / boot / ready from the crossing', () => {
    const tl = timeline(events, 'web', T)!;
    expect(tl).toMatchObject({ container: 'web', replica: 'ciel-web-1', pooled: false, detect_ms: 120, decide_ms: 251, clone_ms: 40.5, boot_ms: 12_000, ready_ms: 12_500 });
    expect(tl.at).toEqual({ crossed: T, detected: T + 120, decided: T + 371, ready: T + 12_500 });
  });
  it('is undefined until the replica serves, and for other containers', () => {
    expect(timeline(events.slice(0, -1), 'web', T)).toBeUndefined();
    expect(timeline(events, 'db', T)).toBeUndefined();
  });
});
