// Carrying out scale decisions: a scale-out acquires replica VMs (clone + boot, or from the pool) and
// registers each with the balancer; a scale-in drains them from the balancer and releases them to the
// pool. The replicas serving each container are kept here, so a restarted controller can hand back the
// ones it adopted (adopt()) and count from them.

import type { Provisioner, ReleaseMode, Vm, VmSpec } from '../provisioners/provisioner.ts';
import { iso } from './math.ts';
import type { Clock, ControllerEvent, DecisionEvent } from './types.ts';

export interface Backend {
  /** the VM serving the replica */
  vm: string;
  container: string;
  /** address of the replica, when the provisioner/guest reports one */
  address?: string;
}

/** The load balancer (IPVS direct routing in a guest, in Ciel). */
export interface LoadBalancer {
  addBackend(service: string, backend: Backend): Promise<void>;
  removeBackend(service: string, backend: Backend): Promise<void>;
}

export type ReplicaProvisioner = Pick<Provisioner, 'acquire' | 'release'>;

export interface ScaleActionsOptions {
  provisioner: ReplicaProvisioner;
  lb: LoadBalancer;
  /** spec of a new minimal VM for one replica of `container`, scaling it out of `origin` */
  specFor(container: string, name: string, origin: string): VmSpec;
  emit(e: ControllerEvent): void;
  clock: Clock;
  /** how scaled-in replicas go back to the pool; default 'pause' */
  releaseMode?: ReleaseMode;
  /** a new replica's name, never used before; default ciel-<container>-<n> counted by this process */
  nameFor?(container: string): string;
  /** a scale-out stopped short: `replicas` (the origin counted) is what serves now */
  onShort?(container: string, replicas: number, origin: string): void;
  /** the policy's maxReplicas: a scale-out never goes past it, whatever it is told */
  maxReplicas?: number;
}

export class ScaleActions {
  private readonly running = new Map<string, Vm[]>();
  private seq = 0;

  constructor(private readonly o: ScaleActionsOptions) {}

  /** Replica VMs currently serving `container` (not counting the origin container). */
  replicas(container: string): readonly Vm[] {
    return this.running.get(container) ?? [];
  }

  /** A replica an earlier run started and this one took over (reconcile.ts). */
  adopt(container: string, vm: Vm): void {
    const list = this.running.get(container) ?? [];
    if (!list.some((v) => v.name === vm.name)) list.push(vm);
    this.running.set(container, list);
  }

  async carryOut(d: DecisionEvent): Promise<void> {
    const now = () => iso(this.o.clock());
    const list = this.running.get(d.container) ?? [];
    this.running.set(d.container, list);
    if (d.action === 'scale_out') {
      const to = Math.min(d.to, this.o.maxReplicas ?? Infinity);
      while (list.length + 1 < to) {
        const name = this.o.nameFor ? this.o.nameFor(d.container) : replicaName(d.container, ++this.seq);
        try {
          const a = await this.o.provisioner.acquire(this.o.specFor(d.container, name, d.vm));
          list.push(a.vm);
          await this.o.lb.addBackend(d.container, { vm: a.vm.name, container: d.container });
          this.o.emit({ type: 'scaled_out', time: now(), container: d.container, replica: a.vm.name, pooled: a.pooled, clone_ms: a.clone_ms, boot_ms: a.boot_ms });
        } catch (err) {
          this.o.emit({ type: 'action_failed', time: now(), container: d.container, error: (err as Error).message });
          this.o.onShort?.(d.container, list.length + 1, d.vm);
          return;
        }
      }
    } else {
      while (list.length + 1 > d.to && list.length > 0) {
        const vm = list.pop()!;
        try {
          await this.o.lb.removeBackend(d.container, { vm: vm.name, container: d.container });
          await this.o.provisioner.release(vm, this.o.releaseMode ?? 'pause');
          this.o.emit({ type: 'scaled_in', time: now(), container: d.container, replica: vm.name });
        } catch (err) {
          this.o.emit({ type: 'action_failed', time: now(), container: d.container, replica: vm.name, error: (err as Error).message });
        }
      }
    }
  }
}

/** A replica's name from its container's (made safe for a VM name) and a number. */
export function replicaName(container: string, n: number, prefix = 'ciel'): string {
  const base = container.replace(/[^A-Za-z0-9_.-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 40) || 'c';
  return `${prefix}-${base}-${n}`;
}
