// Which configured address (provisioner.addresses) each replica holds.

import { AddressPoolExhaustedError } from '../common/errors.ts';
import type { Vm } from '../provisioners/provisioner.ts';

/**
 * Replica addresses from the config's list. The spec of a new replica takes the address of a paused
 * pooled replica of the same container when there is one (its guest still has it, and the pool only
 * resumes a VM whose spec matches), else the first address no replica of this run holds. A replica
 * holds its address while it exists (running or pooled); re-used for another spec it takes that one's.
 */
export class ReplicaAddresses {
  /** replica VM name → its address entry (as configured, e.g. "10.0.0.20/24") */
  private readonly byVm = new Map<string, string>();
  /** spec name → the entry specFor gave it, until acquire() tells which VM took it */
  private readonly bySpec = new Map<string, string>();

  constructor(readonly entries: readonly string[]) {}

  /** The address entry for the next replica of `container`; throws when every address is held. */
  forSpec(specName: string, container: string, pooled: readonly Vm[]): string {
    const paused = pooled.find((v) => v.state === 'paused' && v.spec.container === container && this.byVm.has(v.name));
    let entry = paused ? this.byVm.get(paused.name) : undefined;
    if (!entry) {
      // held by a replica, or given to a spec whose VM is still being made (two containers scaling at once)
      const held = new Set([...this.byVm.values(), ...this.bySpec.values()]);
      entry = this.entries.find((e) => !held.has(e));
    }
    if (!entry) throw new AddressPoolExhaustedError(this.entries, `no free replica address: all ${this.entries.length} of provisioner.addresses are held by replicas of this run`);
    this.bySpec.set(specName, entry);
    return entry;
  }

  /** acquire() returned `vm` for the spec named `specName`. */
  taken(specName: string, vm: string): void {
    const e = this.bySpec.get(specName);
    this.bySpec.delete(specName);
    if (e) this.byVm.set(vm, e);
  }

  /** The address (without prefix) a replica holds, for the balancer. */
  address(vm: string): string | undefined {
    return this.byVm.get(vm)?.split('/')[0];
  }

  /** The entry a replica (or a spec not yet acquired) holds, as configured ("10.0.0.20/24"). */
  entryOf(name: string): string | undefined {
    return this.byVm.get(name) ?? this.bySpec.get(name);
  }

  /** A replica an earlier run started holds `entry` (reconcile.ts): no new replica is given it. */
  hold(vm: string, entry: string): void {
    if (this.entries.includes(entry)) this.byVm.set(vm, entry);
  }

  /** The replica is gone: its address is free again. */
  free(vm: string): void {
    this.byVm.delete(vm);
  }
}
