// Types shared by the policy engine and the autoscaler loop. Everything here is JSON-serialisable.

/** The four resources Ciel scales on (paper sec. 4.1/4.3: CPU, memory, disk, network). */
export type Resource = 'cpu' | 'memory' | 'disk' | 'network';
export const RESOURCES: readonly Resource[] = ['cpu', 'memory', 'disk', 'network'];

export type { VmStats } from '../vmstats/vm-stats.ts';

/** Per-resource policy. Utilisations are fractions (0.7 = 70 %). */
export interface ResourcePolicy {
  resource: Resource;
  /** The VM is hot when its utilisation of this resource is strictly above this. */
  vmThreshold: number;
  /** A container is over threshold when its utilisation is strictly above this (default: vmThreshold). */
  containerThreshold?: number;
  /** Per-container thresholds (key: container name, else id), overriding containerThreshold. */
  containerThresholds?: Record<string, number>;
  /** HPA target utilisation per replica: desired = ceil(current * metric / target). */
  target: number;
  /** Target for the VM-level ratio used when no container is over its threshold (default: target). */
  vmTarget?: number;
}

/** Capacities that turn disk/network byte rates into utilisation fractions. */
export interface Capacities {
  /** bytes/s the disk of one VM is considered to sustain (read+write) */
  diskBytesPerSec: number;
  /** bytes/s one VM's network is considered to sustain (rx+tx) */
  netBytesPerSec: number;
}

export interface PolicyConfig {
  policies: ResourcePolicy[];
  capacities?: Partial<Capacities>;
  /** HPA tolerance: no change when |metric/target - 1| <= tolerance. Default 0.1. */
  tolerance?: number;
  /** After a scale_out of a container, further scale_outs of it wait this long. Default 30 000 ms. */
  scaleUpCooldownMs?: number;
  /** Scale-down stabilisation window (HPA: max recommendation over the window). Default 300 000 ms. */
  scaleDownWindowMs?: number;
  /** Replica bounds per container (origin container counts as 1). Defaults 1 and 10. */
  minReplicas?: number;
  maxReplicas?: number;
  /** Number of recent utilisation points per container for the least-squares trend. Default 5. */
  trendPoints?: number;
  /** Look-ahead for the trend rule: expected time until a new replica serves (s). Default 15. */
  trendHorizonS?: number;
  /**
   * The trend rule only considers a container that accounts for at least this fraction of the VM's own
   * utilisation of the hot resource (a periodic job at a quarter of a noisy VM reading is not why the
   * VM is hot, and scaling it out relieves little). Default 0.5.
   */
  trendMinShare?: number;
  /**
   * A counter baseline older than this is discarded instead of producing a rate over the whole gap
   * (container sampling is intermittent). Default 10 000 ms.
   */
  maxRateGapMs?: number;
}

/** Injected clock: milliseconds since the epoch. */
export type Clock = () => number;

interface EventBase {
  /** ISO-8601 time from the injected clock */
  time: string;
}

export interface VmCheckEvent extends EventBase {
  type: 'vm_check';
  vm: string;
  /** utilisation per resource (absent: no rate yet) */
  util: Partial<Record<Resource, number>>;
  /** real elapsed ms since the previous reading */
  elapsed_ms: number | null;
}
export interface VmHotEvent extends EventBase {
  type: 'vm_hot';
  vm: string;
  resource: Resource;
  value: number;
  threshold: number;
}
export interface VmCoolEvent extends EventBase {
  type: 'vm_cool';
  vm: string;
}
export interface ContainersSampledEvent extends EventBase {
  type: 'containers_sampled';
  vm: string;
  reason: 'vm_hot' | 'scaled_out';
  containers: number;
  /** utilisation per container per resource */
  util: Record<string, Partial<Record<Resource, number>>>;
}
export interface ContainerHotEvent extends EventBase {
  type: 'container_hot';
  vm: string;
  container: string;
  resource: Resource;
  value: number;
  threshold: number;
}
export interface ContainerChosenEvent extends EventBase {
  type: 'container_chosen';
  vm: string;
  container: string;
  rule: 'over_threshold' | 'trend';
  resource: Resource;
  /** over_threshold: value/threshold; trend: projected utilisation */
  score: number;
  /** trend rule only: the candidates with their share (of the VM's utilisation), slope (per s) and projection */
  candidates?: TrendCandidate[];
}
export interface TrendCandidate {
  container: string;
  /** utilisation / the VM's utilisation of the resource */
  share: number;
  util: number;
  slope: number;
  projected: number;
}
/** The VM is hot but the trend rule found no container with a meaningful share of its load. */
export interface NoChoiceEvent extends EventBase {
  type: 'no_choice';
  vm: string;
  resource: Resource;
  vm_util: number;
  min_share: number;
  candidates: TrendCandidate[];
}
export interface DecisionEvent extends EventBase {
  type: 'decision';
  action: 'scale_out' | 'scale_in';
  vm: string;
  container: string;
  from: number;
  to: number;
  reason: string;
  resource: Resource;
  metric: number;
  target: number;
}
export interface CooldownSkipEvent extends EventBase {
  type: 'cooldown_skip';
  container: string;
  current: number;
  desired: number;
  until: string;
}
export interface ToleranceSkipEvent extends EventBase {
  type: 'tolerance_skip';
  container: string;
  resource: Resource;
  ratio: number;
  current: number;
}
export interface StabilizationHoldEvent extends EventBase {
  type: 'stabilization_hold';
  container: string;
  current: number;
  recommended: number;
  stabilized: number;
  window_ms: number;
}
export interface NoRateEvent extends EventBase {
  type: 'no_rate';
  vm: string;
  container?: string;
  reason: string;
}
/** Emitted by the Autoscaler loop (not the pure engine) when an action was carried out or failed. */
export interface ActionEvent extends EventBase {
  type: 'scaled_out' | 'scaled_in' | 'action_failed';
  container: string;
  replica?: string;
  pooled?: boolean;
  clone_ms?: number;
  boot_ms?: number;
  error?: string;
}

/** A monitoring step failed (stats source or sampler); the loop goes on at the next interval. */
export interface ErrorEvent extends EventBase {
  type: 'error';
  where: 'vm_stats' | 'container_sample' | 'step';
  vm?: string;
  error: string;
}

export type ControllerEvent =
  | VmCheckEvent
  | VmHotEvent
  | VmCoolEvent
  | ContainersSampledEvent
  | ContainerHotEvent
  | ContainerChosenEvent
  | NoChoiceEvent
  | DecisionEvent
  | CooldownSkipEvent
  | ToleranceSkipEvent
  | StabilizationHoldEvent
  | NoRateEvent
  | ActionEvent
  | ErrorEvent;
