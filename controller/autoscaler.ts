// The Autoscaler loop: VM stats source → policy engine → provisioner → load balancer.
// Every part is an interface so the real monitor (VMI sampler), libvirt/QEMU provisioners and the IPVS
// balancer plug in, and tests use fakes. Events go out as objects to `emit`; `jsonLines(stream)` makes
// an emitter that prints one JSON line per event.

import type { Writable } from 'node:stream';
import type { Sample } from '../vmi/sample.ts';
import type { ReleaseMode, Vm, VmSpec } from '../provisioners/provisioner.ts';
import { iso } from './math.ts';
import type { PolicyEngine } from './policy.ts';
import { ScaleActions, type LoadBalancer, type ReplicaProvisioner } from './scale-actions.ts';
import type { Clock, ControllerEvent, DecisionEvent, VmStats } from './types.ts';

/** VM-level stats (cheap, every interval): libvirt domstats, /proc/<qemu pid>. */
export interface VmStatsSource {
  vmStats(vm: string): Promise<VmStats>;
}

/** Container-level sample (VMI). The monitor daemon implements this. */
export interface ContainerSampler {
  /** a sample to decide on (consistent: the VM is paused around it) */
  sample(vm: string): Promise<Sample>;
  /**
   * a sample used only as the counter baseline of the next decision (may be taken without pausing the
   * VM; a torn read there can only lower the next rate, never fake a hot container). Default: sample().
   */
  baseline?(vm: string): Promise<Sample>;
}

// the balancer and provisioner as the scale actions use them (scale-actions.ts), named here too
export type { Backend, LoadBalancer, ReplicaProvisioner } from './scale-actions.ts';

export interface AutoscalerOptions {
  /** origin VMs to watch */
  vms: string[];
  engine: PolicyEngine;
  vmSource: VmStatsSource;
  sampler: ContainerSampler;
  provisioner: ReplicaProvisioner;
  lb: LoadBalancer;
  /** spec of a new minimal VM for one replica of `container` out of `origin` (name is unique per call) */
  specFor(container: string, name: string, origin: string): VmSpec;
  /** a new replica's name, never used before (default: ciel-<container>-<n>, counted by this process) */
  nameFor?(container: string): string;
  /** the policy's maxReplicas: a scale-out never goes past it */
  maxReplicas?: number;
  emit(e: ControllerEvent): void;
  clock?: Clock;
  sleep?: (ms: number) => Promise<void>;
  /** VM-level check interval; default 1000 ms (the paper's 1 s) */
  intervalMs?: number;
  /**
   * How the container level gets the counter baseline its rates need (two samples):
   *  'kept' (default): every interval, a VM that is not hot gets a baseline sample (one VMI read,
   *    ~0.3 ms, unpaused), so the first hot interval decides at once: the decision comes within one
   *    interval of the VM-level threshold crossing.
   *  'on-demand': the paper's two-level monitoring to the letter: no VMI while the VM is cool; on the
   *    first hot interval, a baseline sample, a wait of `baselineMs`, and a second sample.
   */
  containerBaseline?: 'kept' | 'on-demand';
  /** 'on-demand': the wait between the baseline and the decision sample; default 250 ms */
  baselineMs?: number;
  /** how scaled-in replicas go back to the pool; default 'pause' */
  releaseMode?: ReleaseMode;
  /**
   * When a VM turns hot and that first hot interval decides nothing (the load crossed just before the
   * check, so no container carries enough of it yet), check again after half an interval instead of a
   * whole one: once per hot streak, so a VM that stays hot undecided is not paused twice as often.
   * Default true.
   */
  recheckNewlyHot?: boolean;
}

/** An emitter printing one JSON line per event. */
export function jsonLines(out: Writable): (e: ControllerEvent) => void {
  return (e) => {
    out.write(JSON.stringify(e) + '\n');
  };
}

export class Autoscaler {
  private readonly clock: Clock;
  private readonly sleep: (ms: number) => Promise<void>;
  /** carries out the decisions, and knows the replicas serving each container */
  readonly actions: ScaleActions;
  private readonly queues = new Map<string, Promise<void>>();
  /** set by step(): a VM turned hot without a decision (see recheckNewlyHot) */
  private recheckSoon = false;

  constructor(private readonly o: AutoscalerOptions) {
    this.clock = o.clock ?? Date.now;
    this.sleep = o.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
    this.actions = new ScaleActions({
      provisioner: o.provisioner,
      lb: o.lb,
      specFor: o.specFor,
      emit: o.emit,
      clock: this.clock,
      ...(o.releaseMode ? { releaseMode: o.releaseMode } : {}),
      ...(o.nameFor ? { nameFor: o.nameFor } : {}),
      ...(o.maxReplicas !== undefined ? { maxReplicas: o.maxReplicas } : {}),
      onShort: (container, n, vm) => o.engine.setReplicas(container, n, vm),
    });
  }

  /** Replica VMs currently serving `container` (not counting the origin container). */
  replicas(container: string): readonly Vm[] {
    return this.actions.replicas(container);
  }

  /**
   * One interval: VM-level check of every origin VM; container sample when the engine asks for it;
   * decisions handed to the provisioner/balancer in the background (per-container queue, so the
   * loop keeps monitoring while a VM boots). Returns the engine's events (also emitted).
   */
  async step(): Promise<ControllerEvent[]> {
    const all: ControllerEvent[] = [];
    const out = (evs: ControllerEvent[]) => {
      for (const e of evs) {
        all.push(e);
        this.o.emit(e);
      }
    };
    const fail = (where: 'vm_stats' | 'container_sample', vm: string, err: unknown) =>
      out([{ type: 'error', time: iso(this.clock()), where, vm, error: (err as Error).message }]);
    // one VM failing (gone, daemon restarting) does not stop the others
    for (const vm of this.o.vms) {
      let stats: VmStats;
      try {
        stats = await this.o.vmSource.vmStats(vm);
      } catch (err) {
        fail('vm_stats', vm, err);
        continue;
      }
      const check = this.o.engine.observeVm(stats);
      out(check.events);
      const kept = (this.o.containerBaseline ?? 'kept') === 'kept';
      if (!check.sampleContainers) {
        if (kept) {
          try {
            const base = await (this.o.sampler.baseline ?? this.o.sampler.sample).call(this.o.sampler, vm);
            this.o.engine.primeContainers({ ...base, vm: base.vm ?? vm });
          } catch (err) {
            fail('container_sample', vm, err);
          }
        }
        continue;
      }
      let sample: Sample;
      try {
        const interval = this.o.intervalMs ?? 1000;
        if (this.o.engine.needsBaseline(vm, interval * 1.5)) {
          const base = await this.o.sampler.sample(vm);
          this.o.engine.primeContainers({ ...base, vm: base.vm ?? vm });
          await this.sleep(this.o.baselineMs ?? 250);
        }
        sample = await this.o.sampler.sample(vm);
      } catch (err) {
        fail('container_sample', vm, err);
        continue;
      }
      const step = this.o.engine.observeContainers({ ...sample, vm: sample.vm ?? vm });
      out(step.events);
      for (const d of step.decisions) this.enqueue(d);
      if (check.becameHot && step.decisions.length === 0 && (this.o.recheckNewlyHot ?? true)) this.recheckSoon = true;
    }
    return all;
  }

  /** Resolves when every queued scale action has finished. */
  async idle(): Promise<void> {
    for (;;) {
      const qs = [...this.queues.values()];
      await Promise.all(qs);
      if ([...this.queues.values()].every((q, i) => q === qs[i]) && this.queues.size === qs.length) return;
    }
  }

  /** Loop every intervalMs until the signal aborts; the next check is scheduled from the previous start. */
  async run(signal?: AbortSignal): Promise<void> {
    const interval = this.o.intervalMs ?? 1000;
    while (!signal?.aborted) {
      const t0 = this.clock();
      this.recheckSoon = false;
      try {
        await this.step();
      } catch (err) {
        this.o.emit({ type: 'error', time: iso(this.clock()), where: 'step', error: (err as Error).message });
      }
      const wait = Math.max(0, t0 + (this.recheckSoon ? interval / 2 : interval) - this.clock());
      if (signal?.aborted) break;
      await this.sleep(wait);
    }
    await this.idle();
  }

  private enqueue(d: DecisionEvent): void {
    const prev = this.queues.get(d.container) ?? Promise.resolve();
    // never let one failed action poison the queue for the next ones
    const next = prev
      .then(() => this.actions.carryOut(d))
      .catch((err: unknown) => {
        this.o.emit({ type: 'action_failed', time: iso(this.clock()), container: d.container, error: (err as Error).message });
      });
    this.queues.set(d.container, next);
  }
}
