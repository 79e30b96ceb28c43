// The scaling policy's configuration (the "policy" of `ciel autoscale --config`, and what PolicyEngine
// takes): one zod schema, from which the TypeScript types come. Defaults live in the engine (policy.ts),
// so a config that leaves a knob out and a test that builds a PolicyConfig by hand mean the same.

import { z } from 'zod';
import { describe, int, list, num, oneOf, strictObject } from '../common/config-schema.ts';

/** The four resources Ciel scales on (paper sec. 4.1/4.3: CPU, memory, disk, network). */
export const RESOURCES = ['cpu', 'memory', 'disk', 'network'] as const;
export type Resource = (typeof RESOURCES)[number];

const fraction = () => num('a fraction > 0 and <= 1 (0.7 = 70 %)').gt(0).lte(1);
const ms = (want: string) => num(`a number of milliseconds ${want}`);
const DAY_MS = 86_400_000;

/** Per-resource policy. Utilisations are fractions (0.7 = 70 %). */
export const resourcePolicySchema = strictObject({
  resource: oneOf(RESOURCES),
  /** The VM is hot when its utilisation of this resource is strictly above this. */
  vmThreshold: fraction(),
  /** A container is over threshold when its utilisation is strictly above this (default: vmThreshold). */
  containerThreshold: fraction().optional(),
  /** Per-container thresholds (key: container name, else id), overriding containerThreshold. */
  containerThresholds: z.record(z.string(), fraction(), { errorMap: (_i, ctx) => ({ message: `must be an object {"<container name>": fraction} (got ${describe(ctx.data)})` }) }).optional(),
  /** HPA target utilisation per replica: desired = ceil(current * metric / target). */
  target: fraction(),
  /** Target for the VM-level ratio used when no container is over its threshold (default: target). */
  vmTarget: fraction().optional(),
});

/** Capacities that turn disk/network byte rates into utilisation fractions. */
export const capacitiesSchema = strictObject({
  /** bytes/s the disk of one VM is considered to sustain (read+write) */
  diskBytesPerSec: num('a number of bytes per second > 0').gt(0),
  /** bytes/s one VM's network is considered to sustain (rx+tx) */
  netBytesPerSec: num('a number of bytes per second > 0').gt(0),
});

export const policyConfigSchema = strictObject(
  {
    policies: list(resourcePolicySchema, 'must list at least one resource policy').superRefine((ps, ctx) => {
      const seen = new Map<Resource, number>();
      ps.forEach((p, i) => {
        if (seen.has(p.resource)) ctx.addIssue({ code: 'custom', path: [i, 'resource'], message: `duplicate resource ${JSON.stringify(p.resource)} (also policy.policies[${seen.get(p.resource)}])` });
        seen.set(p.resource, i);
      });
    }),
    capacities: capacitiesSchema.partial().optional(),
    /** HPA tolerance: no change when |metric/target - 1| <= tolerance. Default 0.1. */
    tolerance: num('a number >= 0 and < 1').gte(0).lt(1).optional(),
    /** After a scale_out of a container, further scale_outs of it wait this long. Default 30 000 ms. */
    scaleUpCooldownMs: ms('0..86400000').gte(0).lte(DAY_MS).optional(),
    /** Scale-down stabilisation window (HPA: max recommendation over the window). Default 300 000 ms. */
    scaleDownWindowMs: ms('0..86400000').gte(0).lte(DAY_MS).optional(),
    /** Replica bounds per container (origin container counts as 1). Defaults 1 and 10. */
    minReplicas: int(1, 1000).optional(),
    maxReplicas: int(1, 1000).optional(),
    /** Number of recent utilisation points per container for the least-squares trend. Default 5. */
    trendPoints: int(2, 1000, 'an integer 2..1000 (a slope needs two points)').optional(),
    /** Look-ahead for the trend rule: expected time until a new replica serves (s). Default 15. */
    trendHorizonS: num('a number of seconds 0..86400').gte(0).lte(86400).optional(),
    /**
     * The trend rule only considers a container that accounts for at least this fraction of the VM's own
     * utilisation of the hot resource (a periodic job at a quarter of a noisy VM reading is not why the
     * VM is hot, and scaling it out relieves little). Default 0.5.
     */
    trendMinShare: num('a fraction 0..1').gte(0).lte(1).optional(),
    /**
     * A counter baseline older than this is discarded instead of producing a rate over the whole gap
     * (container sampling is intermittent). Default 10 000 ms.
     */
    maxRateGapMs: ms('> 0').gt(0).lte(DAY_MS).optional(),
  },
  { missing: 'missing (at least {"policies": [{"resource": "cpu", "vmThreshold": 0.7, "target": 0.6}]})' },
).superRefine((p, ctx) => {
  const min = p.minReplicas ?? 1;
  const max = p.maxReplicas ?? 10;
  if (min > max)
    ctx.addIssue({
      code: 'custom',
      path: [p.maxReplicas !== undefined ? 'maxReplicas' : 'minReplicas'],
      message: `minReplicas (${min}) is above maxReplicas (${max}${p.maxReplicas !== undefined ? '' : ', the default'})`,
    });
});

export type ResourcePolicy = z.output<typeof resourcePolicySchema>;
export type Capacities = z.output<typeof capacitiesSchema>;
export type PolicyConfig = z.output<typeof policyConfigSchema>;
