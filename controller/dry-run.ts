// The provisioner of a dry run (`ciel autoscale --dry-run`, or no "provisioner" in the config).

import type { Acquired, ReleaseMode, Vm, VmSpec } from '../provisioners/provisioner.ts';
import type { ReplicaProvisioner } from './autoscaler.ts';

export interface DryRunAction {
  /** ISO time */
  time: string;
  op: 'start' | 'release';
  vm: string;
  container: string;
  /** release: how the replica would go back to the pool */
  mode?: ReleaseMode;
}

/**
 * Stands in for a provisioner in a dry run: records what it would start or release and answers as if
 * it had (so the policy engine's replica counts follow its decisions, as they would for real). Starts
 * nothing, touches no file.
 */
export class DryRunProvisioner implements ReplicaProvisioner {
  readonly actions: DryRunAction[] = [];

  async acquire(spec: VmSpec): Promise<Acquired> {
    this.actions.push({ time: new Date().toISOString(), op: 'start', vm: spec.name, container: spec.container });
    return { vm: { name: spec.name, spec: { ...spec }, state: 'running', disk: '', serialLog: '' }, pooled: false, clone_ms: 0, boot_ms: 0 };
  }

  async release(vm: Vm, mode: ReleaseMode = 'pause'): Promise<void> {
    this.actions.push({ time: new Date().toISOString(), op: 'release', vm: vm.name, container: vm.spec.container, mode });
    vm.state = mode === 'pause' ? 'paused' : 'stopped';
  }
}
