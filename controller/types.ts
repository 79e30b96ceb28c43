// Types shared by the policy engine and the autoscaler loop. Everything here is JSON-serialisable.

export { RESOURCES, type Capacities, type PolicyConfig, type Resource, type ResourcePolicy } from './policy-config.ts';
import type { Resource } from './policy-config.ts';

export type { VmStats } from '../vmstats/vm-stats.ts';

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
