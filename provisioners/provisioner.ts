// The provisioner interface: make a minimal VM for one container (clone from a template or take one from
// a pool), start it, return it to the pool. One implementation of the pool (pool.ts) over two hypervisor
// backends (vm-backend.ts): libvirt.ts (libvirtd + virsh) and qemu-direct.ts (QEMU processes, no
// daemon: the embedded default).

import type { VmStats } from '../vmstats/vm-stats.ts';
import { ProvisionError } from './errors.ts';

export type { VmStats };

/** How a clone's disk is made from the template image. */
export type DiskStrategy = 'overlay' | 'sparse-copy';

export interface VmSpec {
  /** VM (domain) name, unique on the host */
  name: string;
  vcpus: number;
  memMiB: number;
  /** guest kernel (direct kernel boot) */
  kernel: string;
  initrd: string;
  /** kernel command line; says which one container the guest runs (e.g. `ciel.container=web`) */
  cmdline: string;
  /** overlay: qcow2 with the template as backing file; sparse-copy: copy only allocated blocks */
  disk: DiskStrategy;
  /** the container this VM runs (pool matching, ready line) */
  container: string;
  /**
   * Text that marks the guest as ready on its serial console (default `CIEL-READY <container>`).
   * start() returns once it appears (boot_ms); null: do not wait.
   */
  ready?: string | null;
}

export type VmState = 'defined' | 'running' | 'paused' | 'stopped' | 'destroyed';

export interface Vm {
  name: string;
  spec: VmSpec;
  state: VmState;
  /** the VM's own disk image (overlay or sparse copy) */
  disk: string;
  /** serial console log file */
  serialLog: string;
  /** host PID of the QEMU process while running */
  pid?: number;
  /** guest RAM file, readable by the monitor, while running (when known) */
  ramFile?: string;
  /** a second QMP socket left free for `ciel monitor --qemu` (QMP serves one client per socket and the
   * provisioner holds the first), while running (QEMU-direct) */
  monitorQmp?: string;
}

export interface Timings {
  /** making the VM: define + disk clone (0 when reused from the pool) */
  clone_ms: number;
  /** start (or resume) until the ready line (or until start returned when not waiting) */
  boot_ms: number;
}

export interface Acquired extends Timings {
  vm: Vm;
  /** true when the VM came from the pool */
  pooled: boolean;
  /** how a pooled VM was brought back: resumed from pause, or booted from stopped */
  reuse?: 'resume' | 'boot';
}

export type ReleaseMode = 'pause' | 'stop';

export interface Provisioner {
  readonly kind: string;
  /** Define a new VM from the template (disk per spec.disk); the VM is not started. */
  cloneFromTemplate(spec: VmSpec): Promise<{ vm: Vm; clone_ms: number }>;
  /** Boot (or resume a paused VM) and wait for the ready line; returns boot_ms. */
  start(vm: Vm): Promise<{ boot_ms: number }>;
  /** Power off (keeps the definition and disk, for reuse). */
  stop(vm: Vm): Promise<void>;
  /** Power off if running, undefine, delete disk and logs. */
  destroy(vm: Vm): Promise<void>;
  /**
   * A running VM for spec: from the pool when one fits (see pickFromPool; a pooled VM keeps its own
   * name and disk), else a fresh clone named spec.name. A failed fresh clone is destroyed again.
   */
  acquire(spec: VmSpec): Promise<Acquired>;
  /** Return a VM to the pool: paused (fast reuse, keeps RAM) or stopped (keeps nothing but disk). */
  release(vm: Vm, mode?: ReleaseMode): Promise<void>;
  /** VMs waiting in the pool. */
  pooled(): readonly Vm[];
  /** VM-level stats for the controller's two-level monitoring (a Vm, or a VM name). */
  vmStats(vm: Vm | string): Promise<VmStats>;
  /** Destroy everything this provisioner created (pool included). */
  close(): Promise<void>;
}

/** The ready line the test guest prints: `CIEL-READY <container>`. */
export function readyLine(spec: VmSpec): string | null {
  return spec.ready === undefined ? `CIEL-READY ${spec.container}` : spec.ready;
}

/**
 * Pool choice, shared by the implementations. Preference: a paused VM running the same container
 * (resume: milliseconds), then a stopped VM for the same container, then a stopped VM with the same
 * kernel/initrd (re-specced: new cmdline/vCPUs/memory before boot). Never a paused VM for another
 * container (its RAM holds that container's state).
 */
export function pickFromPool(pool: readonly Vm[], spec: VmSpec): Vm | undefined {
  const same = (v: Vm) =>
    v.spec.container === spec.container &&
    v.spec.cmdline === spec.cmdline &&
    v.spec.vcpus === spec.vcpus &&
    v.spec.memMiB === spec.memMiB &&
    v.spec.kernel === spec.kernel &&
    v.spec.initrd === spec.initrd;
  return (
    pool.find((v) => v.state === 'paused' && same(v)) ??
    pool.find((v) => v.state === 'stopped' && same(v)) ??
    pool.find((v) => v.state === 'stopped' && v.spec.kernel === spec.kernel && v.spec.initrd === spec.initrd)
  );
}

/** Names must be safe as file names and libvirt domain names. */
export function checkName(name: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(name)) throw new ProvisionError(name, 'name', `bad VM name ${JSON.stringify(name)}`);
}
