// A provisioner wrapper that remembers the VMs it handed out, so a balancer can find a replica's address.

import type { Acquired, Provisioner, ReleaseMode, Vm, VmSpec } from '../provisioners/provisioner.ts';
import type { ReplicaProvisioner } from './autoscaler.ts';

/** The address a replica was given on its kernel command line (`ciel.ip=A/N`), if any. */
export function addressOf(vm: Vm | VmSpec): string | undefined {
  const cmdline = 'spec' in vm ? vm.spec.cmdline : vm.cmdline;
  return /(?:^|\s)ciel\.ip=([0-9.]+)(?:\/\d+)?(?:\s|$)/.exec(cmdline)?.[1];
}

/**
 * Passes acquire/release through to a provisioner and remembers every VM it handed out (by name) with
 * the Acquired record, so the balancer adapter and the demo can find a replica's address and timings.
 */
export class TrackingProvisioner implements ReplicaProvisioner {
  readonly byName = new Map<string, Vm>();
  readonly acquired: (Acquired & { at: number })[] = [];
  readonly released: { vm: string; mode: ReleaseMode; at: number }[] = [];

  constructor(readonly inner: Pick<Provisioner, 'acquire' | 'release'>) {}

  async acquire(spec: VmSpec): Promise<Acquired> {
    const a = await this.inner.acquire(spec);
    this.byName.set(a.vm.name, a.vm);
    this.acquired.push({ ...a, at: Date.now() });
    return a;
  }

  async release(vm: Vm, mode?: ReleaseMode): Promise<void> {
    await this.inner.release(vm, mode);
    this.released.push({ vm: vm.name, mode: mode ?? 'pause', at: Date.now() });
  }

  address(vmName: string): string | undefined {
    const vm = this.byName.get(vmName);
    return vm ? addressOf(vm) : undefined;
  }
}
