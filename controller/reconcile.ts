// On start, the controller makes what runs agree with what its state (state-store.ts) says, as a
// Kubernetes controller does after a restart: it adopts the replicas that still run, finishes or rolls
// back the actions a crash cut short, and removes what Ciel started that the state no longer wants.
//
// Per recorded step (durable-replicas.ts writes each before taking it):
//   intent, cloned           → rolled back: whatever QEMU, disk or RAM file exists is removed
//   booted, registering      → running: finished (registered with the balancer; the hook is idempotent);
//                              gone: removed from the balancer (it may have been added) and cleaned up
//   serving                  → running: adopted; gone: removed from the balancer, cleaned up
//   draining                 → the drain is finished (removed from the balancer), then released to
//                              the pool when it runs, else cleaned up
//   pooled                   → running: adopted into the pool (paused); gone: cleaned up
// Then every VM named with this config's prefix that has a process or files but no row is an orphan:
// ended and its files removed. Finally, replicas beyond maxReplicas (an older config's) are drained.

import type { Vm } from '../provisioners/provisioner.ts';
import type { LoadBalancer } from './autoscaler.ts';
import type { ReplicaAddresses } from './replica-addresses.ts';
import type { ReplicaRow, StateStore } from './state-store.ts';

/** What reconcile needs of the provisioner (VmPool's recovery primitives and release). */
export interface RecoverablePool {
  leftovers(prefix: string): Set<string>;
  adopt(vm: Vm, pooled: boolean): Promise<boolean>;
  reap(name: string): Promise<void>;
  release(vm: Vm, mode?: 'pause' | 'stop'): Promise<void>;
}

export interface ReconcileResult {
  /** replicas serving after reconciliation, by container */
  serving: Map<string, { vm: Vm; origin: string }[]>;
  /** one line per thing done, for the log */
  done: string[];
}

export async function reconcile(o: { store: StateStore; pool: RecoverablePool; lb: LoadBalancer; addrs?: ReplicaAddresses; maxReplicas: number }): Promise<ReconcileResult> {
  const { store, pool, lb } = o;
  const done: string[] = [];
  const serving = new Map<string, { vm: Vm; origin: string }[]>();
  const backend = (r: ReplicaRow) => ({ vm: r.name, container: r.container, ...(r.address ? { address: r.address.split('/')[0]! } : {}) });
  const vmOf = (r: ReplicaRow): Vm => ({ name: r.name, spec: r.spec, state: 'running', disk: r.disk ?? '', serialLog: '', ...(r.pid ? { pid: r.pid } : {}), ...(r.ramFile ? { ramFile: r.ramFile } : {}) });
  const gone = async (r: ReplicaRow, unregister: boolean, why: string) => {
    if (unregister) await lb.removeBackend(r.container, backend(r));
    await pool.reap(r.name);
    store.delete(r.name);
    o.addrs?.free(r.name);
    done.push(`${r.name}: ${why}`);
  };
  const serve = (r: ReplicaRow, vm: Vm) => {
    const list = serving.get(r.container) ?? [];
    list.push({ vm, origin: r.origin });
    serving.set(r.container, list);
    if (r.address) o.addrs?.hold(r.name, r.address);
  };

  for (const r of store.all()) {
    if (r.state === 'intent' || r.state === 'cloned') {
      await gone(r, false, `rolled back (cut short at ${r.state})`);
      continue;
    }
    const vm = vmOf(r);
    const pooled = r.state === 'draining' || r.state === 'pooled';
    if (r.state === 'draining') await lb.removeBackend(r.container, backend(r)); // finish the drain first
    if (!(await pool.adopt(vm, pooled))) {
      await gone(r, r.state === 'booted' || r.state === 'registering' || r.state === 'serving', `not running any more (was ${r.state}): removed`);
      continue;
    }
    if (pooled) {
      store.set(r.name, 'pooled', { pid: vm.pid, ramFile: vm.ramFile });
      if (r.address) o.addrs?.hold(r.name, r.address);
      done.push(`${r.name}: ${r.state === 'draining' ? 'drain finished, ' : ''}adopted into the pool (${vm.state})`);
      continue;
    }
    if (r.state !== 'serving') {
      store.set(r.name, 'registering', { pid: vm.pid, ramFile: vm.ramFile });
      await lb.addBackend(r.container, backend(r));
      store.set(r.name, 'serving');
      done.push(`${r.name}: scale-out finished (was ${r.state}): registered with the balancer`);
    } else {
      store.set(r.name, 'serving', { pid: vm.pid, ramFile: vm.ramFile });
      done.push(`${r.name}: adopted (serving ${r.container})`);
    }
    serve(r, vm);
  }

  // orphans: Ciel's VMs of this config that no row wants
  const wanted = new Set(store.all().map((r) => r.name));
  for (const name of pool.leftovers(store.prefix)) {
    if (wanted.has(name)) continue;
    await pool.reap(name);
    done.push(`${name}: orphan (no state): ended, files removed`);
  }

  // never more than maxReplicas (the origin counts as one)
  for (const [container, list] of serving) {
    while (list.length + 1 > o.maxReplicas) {
      const { vm } = list.pop()!;
      const r = store.get(vm.name)!;
      store.set(vm.name, 'draining');
      await lb.removeBackend(container, backend(r));
      await pool.release(vm, 'pause');
      store.set(vm.name, 'pooled', { pid: vm.pid, ramFile: vm.ramFile });
      done.push(`${vm.name}: over maxReplicas ${o.maxReplicas}: drained to the pool`);
    }
  }
  return { serving, done };
}
