// The provisioner and the balancer as the controller uses them, each step written to the state store
// (state-store.ts) *before* it is taken, so that a controller killed between any two steps finds on
// restart the last step that may have happened (reconcile.ts decides from it):
//   scale-out: intent (name reserved) → cloned (disk made; beforeBoot) → booted (ready) →
//              registering (hook about to run) → serving
//   scale-in:  draining (hook about to remove it) → pooled (released: paused in the pool)
// CIEL_FAULT_AT (fault-point.ts) can kill the controller at the named points between them.

import type { Acquired, ReleaseMode, Vm, VmSpec } from '../provisioners/provisioner.ts';
import type { Backend, LoadBalancer, ReplicaProvisioner } from './autoscaler.ts';
import { faultPoint } from './fault-point.ts';
import type { ReplicaAddresses } from './replica-addresses.ts';
import type { StateStore } from './state-store.ts';

export class DurableReplicas {
  /** spec name → the origin VM it scales (specFor knows it, acquire() does not) */
  private readonly origins = new Map<string, string>();

  constructor(
    private readonly store: StateStore,
    private readonly inner: ReplicaProvisioner,
    private readonly lb: LoadBalancer,
    private readonly addrs?: ReplicaAddresses,
  ) {}

  /** The spec for a new replica was made (by specFor) for `origin`. */
  specMade(spec: VmSpec, origin: string): VmSpec {
    this.origins.set(spec.name, origin);
    return spec;
  }

  /** The provisioner's beforeBoot: the clone's disk exists, QEMU is about to start. */
  async cloned(vm: Vm): Promise<void> {
    if (this.store.get(vm.name)) this.store.set(vm.name, 'cloned', { disk: vm.disk });
    faultPoint('after_clone');
  }

  readonly provisioner: ReplicaProvisioner = {
    acquire: async (spec: VmSpec): Promise<Acquired> => {
      const origin = this.origins.get(spec.name) ?? '';
      this.origins.delete(spec.name);
      const address = this.addrs?.entryOf(spec.name);
      this.store.put({ name: spec.name, container: spec.container, origin, state: 'intent', spec, ...(address ? { address } : {}) });
      let a: Acquired;
      try {
        a = await this.inner.acquire(spec);
      } catch (e) {
        this.store.delete(spec.name); // the pool destroyed a failed fresh clone
        throw e;
      }
      this.addrs?.taken(spec.name, a.vm.name);
      if (a.vm.name !== spec.name) {
        // a pooled VM took the spec: the reserved name was never used
        this.store.delete(spec.name);
        const row = this.store.get(a.vm.name);
        const addr = this.addrs?.entryOf(a.vm.name) ?? row?.address;
        this.store.put({ name: a.vm.name, container: spec.container, origin: origin || (row?.origin ?? ''), state: 'booted', spec: a.vm.spec, disk: a.vm.disk, ...(addr ? { address: addr } : {}), ...vmProcess(a.vm) });
      } else this.store.set(a.vm.name, 'booted', { disk: a.vm.disk, ...vmProcess(a.vm) });
      faultPoint('after_boot');
      return a;
    },
    release: async (vm: Vm, mode?: ReleaseMode): Promise<void> => {
      await this.inner.release(vm, mode);
      this.store.set(vm.name, 'pooled', vmProcess(vm));
    },
  };

  readonly balancer: LoadBalancer = {
    addBackend: async (service: string, b: Backend): Promise<void> => {
      this.store.set(b.vm, 'registering');
      faultPoint('before_register');
      await this.lb.addBackend(service, b);
      faultPoint('after_register');
      this.store.set(b.vm, 'serving');
    },
    removeBackend: async (service: string, b: Backend): Promise<void> => {
      this.store.set(b.vm, 'draining');
      faultPoint('before_drain');
      await this.lb.removeBackend(service, b);
      faultPoint('during_drain');
    },
  };
}

/** The process a VM runs as, for the state (pid and RAM file; undefined once stopped). */
function vmProcess(vm: Vm): { pid: number | undefined; ramFile: string | undefined } {
  return { pid: vm.pid, ramFile: vm.ramFile };
}
