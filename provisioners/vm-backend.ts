// The VM primitives a hypervisor backend gives the pool (pool.ts): make, boot, pause, resume, stop and
// destroy one VM, save and restore its memory for warm start, its control channel and its stats. No
// policy here: which VM to reuse, when to warm-start, what to do on failure is pool.ts's, written once.
// Two backends: qemu-direct.ts (QEMU processes) and libvirt.ts (libvirtd through virsh).

import type { VmStats } from '../vmstats/vm-stats.ts';
import type { GuestChannel } from './guest-channel.ts';
import type { Vm, VmSpec } from './provisioner.ts';
import type { WarmImage } from './warm-identity.ts';

/** A saved warm image, as saveImage() made it. */
export interface SavedImage {
  image: WarmImage;
  save_ms: number;
  bytes: number;
}

/** A new VM restored from a warm image: running, identity not yet fixed up. */
export interface RestoredVm {
  vm: Vm;
  /** making the VM before the restore proper: disk, definition (and the clone's image under libvirt) */
  clone_ms: number;
  /** the restore, until the guest runs again */
  restore_ms: number;
}

/** R: what restore() tells besides RestoredVm (libvirt: the time making the clone's image). */
export interface VmBackend<R extends RestoredVm = RestoredVm> {
  readonly kind: string;
  /** Throws unless this backend made `vm` (and has not destroyed it). */
  check(vm: Vm): void;
  /** Every VM this backend made and has not destroyed. */
  vms(): Vm[];
  /** Define a new VM from the template (disk per spec.disk); not started. */
  define(spec: VmSpec): Promise<{ vm: Vm; clone_ms: number }>;
  /** Boot a defined or stopped VM; waits for its ready line (readyLine). On failure the VM is off. */
  boot(vm: Vm): Promise<void>;
  /** Freeze the vCPUs of a running VM (RAM kept). */
  pause(vm: Vm): Promise<void>;
  resume(vm: Vm): Promise<void>;
  /** Power off; definition and disk stay. */
  stop(vm: Vm): Promise<void>;
  /** Power off if running, undefine, delete disk and logs. A VM this backend does not know: nothing. */
  destroy(vm: Vm): Promise<void>;
  /** Give a VM `spec` (its name and disk stay): a stopped VM boots with it next time. */
  respec(vm: Vm, spec: VmSpec): Promise<void>;
  /** Save a running VM's memory and device state to `file`; the VM is left paused or stopped. */
  saveImage(vm: Vm, file: string): Promise<SavedImage>;
  /**
   * A new VM (spec's name, the saved machine's size, kernel and cmdline) restored from `image`. A bad
   * image is refused before anything is made; a failed restore leaves nothing behind.
   */
  restore(spec: VmSpec, image: WarmImage): Promise<R>;
  /** The MAC this backend gave the VM's NIC. */
  macOf(vm: Vm): string;
  /** The control channel (ttyS1) of a running VM, connected on first use. */
  channel(vm: Vm, timeoutMs: number): Promise<GuestChannel>;
  /** VM-level stats (vmstats/) of a VM, or of a VM (domain) known by name. */
  vmStats(vm: Vm | string): Promise<VmStats>;
  /**
   * Recovery after the controller's own crash (qemu-processes.ts, libvirt-recovery.ts): VMs of this backend's
   * folder left by an earlier process, taken over or ended by name.
   */
  recovery?: BackendRecovery;
}

/** What a backend left running or on disk, and how to take it over or end it. */
export interface BackendRecovery {
  /** Names of VMs starting with `prefix` that have a process running or files left in the folder. */
  leftovers(prefix: string): Set<string>;
  /** Take over a VM an earlier process started (its record as it was kept): false when it is not running. */
  adopt(vm: Vm): Promise<boolean>;
  /** End a VM this process does not track: kill its process, remove its disk, RAM file, logs and sockets. */
  reap(name: string): Promise<void>;
}
