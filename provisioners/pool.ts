// The pool and warm start, written once over a hypervisor backend (vm-backend.ts): both provisioners
// (QemuDirectProvisioner, LibvirtProvisioner) are this class over their backend.
//
// Policy: released VMs wait paused (resume: milliseconds, RAM kept) or stopped (disk kept); acquire()
// takes the best fit (pickFromPool), else warm-starts a new VM from a saved memory image when one is
// configured (paper 002: restoring a booted VM's memory beats booting it), else clones the template.
// A warm clone is then fixed up over its control channel (warm-identity.ts) and becomes the spec's VM:
// the pool matches it against that spec, and stopped, it boots cold as that container.

import type { VmStats } from '../vmstats/vm-stats.ts';
import { ProvisionError } from './errors.ts';
import type { ExecResult, GuestChannel } from './guest-channel.ts';
import { pickFromPool, type Acquired, type Provisioner, type ReleaseMode, type Vm, type VmSpec } from './provisioner.ts';
import type { BackendRecovery, RestoredVm, SavedImage, VmBackend } from './vm-backend.ts';
import { fixupScript, type WarmIdentity, type WarmImage } from './warm-identity.ts';

export interface PoolOptions {
  /** the identity fix-up of a warm clone may take this long; default 90 000 ms */
  bootTimeoutMs?: number;
  /**
   * Called by acquire() with the VM's disk offline, before it boots (a fresh clone, or a stopped pooled
   * VM re-specced for another container): e.g. disk-edit.ts selectContainers(vm.disk, ...) so that only
   * the needed container starts. Its time counts into clone_ms.
   */
  beforeBoot?: (vm: Vm) => Promise<void>;
  /**
   * Warm start in acquire(): when no paused pooled VM fits, a new VM is restored from this saved image
   * (warmStart) rather than booted from a stopped pooled VM or a fresh clone (~10 s under TCG).
   * identity(spec) gives its address/containers; undefined for a spec means: boot it cold.
   */
  warm?: { image: WarmImage; identity: (spec: VmSpec) => WarmIdentity | undefined };
}

/** What warmStart() tells: Acquired, the restore's own timings (restore_ms, ...) and the fix-up's. */
export type WarmStarted<B extends VmBackend<RestoredVm>> = Acquired & Omit<Awaited<ReturnType<B['restore']>>, 'vm' | 'clone_ms'> & { fixup_ms: number };

export class VmPool<B extends VmBackend<RestoredVm> = VmBackend> implements Provisioner {
  readonly kind: string;
  private pool: Vm[] = [];

  constructor(
    protected readonly backend: B,
    private readonly po: PoolOptions = {},
  ) {
    this.kind = backend.kind;
  }

  pooled(): readonly Vm[] {
    return this.pool;
  }

  cloneFromTemplate(spec: VmSpec): Promise<{ vm: Vm; clone_ms: number }> {
    return this.backend.define(spec);
  }

  /** Boot (or resume a paused VM) and wait for the ready line; returns boot_ms. */
  async start(vm: Vm): Promise<{ boot_ms: number }> {
    const t0 = performance.now();
    if (vm.state === 'paused') await this.backend.resume(vm);
    else await this.backend.boot(vm);
    return { boot_ms: performance.now() - t0 };
  }

  stop(vm: Vm): Promise<void> {
    return this.backend.stop(vm);
  }

  async destroy(vm: Vm): Promise<void> {
    await this.backend.destroy(vm);
    this.pool = this.pool.filter((v) => v !== vm);
  }

  async acquire(spec: VmSpec): Promise<Acquired & { warm?: boolean }> {
    const p = pickFromPool(this.pool, spec);
    const warm = this.po.warm;
    const id = warm && (!p || p.state !== 'paused') ? warm.identity(spec) : undefined;
    if (id && warm) {
      const w = await this.warmStart(spec, warm.image, id);
      return { vm: w.vm, pooled: false, clone_ms: w.clone_ms, boot_ms: w.boot_ms, warm: true };
    }
    if (p) {
      this.pool = this.pool.filter((v) => v !== p);
      const reuse = p.state === 'paused' ? 'resume' : 'boot';
      // a stopped VM boots with the new container's cmdline and size; its name and disk stay
      let clone_ms = 0;
      if (reuse === 'boot') {
        await this.backend.respec(p, { ...spec, name: p.name });
        clone_ms = await this.beforeBoot(p);
      }
      const { boot_ms } = await this.start(p);
      return { vm: p, pooled: true, reuse, clone_ms, boot_ms };
    }
    const made = await this.backend.define(spec);
    const vm = made.vm;
    try {
      const clone_ms = made.clone_ms + (await this.beforeBoot(vm));
      const { boot_ms } = await this.start(vm);
      return { vm, pooled: false, clone_ms, boot_ms };
    } catch (err) {
      await this.destroy(vm).catch(() => {});
      throw err;
    }
  }

  /** Run the beforeBoot hook; its time in ms. */
  private async beforeBoot(vm: Vm): Promise<number> {
    if (!this.po.beforeBoot) return 0;
    const t0 = performance.now();
    await this.po.beforeBoot(vm);
    return performance.now() - t0;
  }

  async release(vm: Vm, mode: ReleaseMode = 'pause'): Promise<void> {
    this.backend.check(vm);
    if (mode === 'pause' && vm.state === 'running') {
      await this.backend.pause(vm);
    } else if (vm.state === 'running' || vm.state === 'paused') {
      await this.backend.stop(vm);
    }
    if (!this.pool.includes(vm)) this.pool.push(vm);
  }

  vmStats(vm: Vm | string): Promise<VmStats> {
    return this.backend.vmStats(vm);
  }

  /** The backend's crash recovery (BackendRecovery); a backend without it is refused by name. */
  private recovery(): BackendRecovery {
    const r = this.backend.recovery;
    if (!r) throw new ProvisionError(undefined, 'recover', `the ${this.kind} provisioner cannot take over VMs an earlier process started`);
    return r;
  }

  /** Names starting with `prefix` of VMs left running or on disk by any process (see BackendRecovery). */
  leftovers(prefix: string): Set<string> {
    return this.recovery().leftovers(prefix);
  }

  /** Take over a VM an earlier process started; `pooled`: it waits in the pool (paused). False: not running. */
  async adopt(vm: Vm, pooled: boolean): Promise<boolean> {
    if (!(await this.recovery().adopt(vm))) return false;
    if (pooled) {
      if (vm.state === 'running') await this.backend.pause(vm);
      this.pool.push(vm);
    }
    return true;
  }

  /** End a VM by name, tracked or not: process, disk, RAM file, logs, sockets. */
  async reap(name: string): Promise<void> {
    this.pool = this.pool.filter((v) => v.name !== name);
    await this.recovery().reap(name);
  }

  async close(): Promise<void> {
    for (const vm of this.backend.vms()) await this.destroy(vm);
    this.pool = [];
  }

  /** The MAC the provisioner gave the VM's NIC. */
  macOf(vm: Vm): string {
    return this.backend.macOf(vm);
  }

  /** The control channel of a running VM (connected on first use; waits for the guest's loop). */
  channel(vm: Vm, timeoutMs = 30_000): Promise<GuestChannel> {
    return this.backend.channel(vm, timeoutMs);
  }

  /** Run a shell script inside the guest over the control channel. */
  async exec(vm: Vm, script: string, timeoutMs = 30_000): Promise<ExecResult> {
    return (await this.channel(vm, timeoutMs)).exec(script, timeoutMs);
  }

  /**
   * Save a running VM's memory and device state to `file` (QEMU: left paused; libvirt: stopped, still
   * defined). Returns the image to restore clones from.
   */
  saveWarmImage(vm: Vm, file: string): Promise<SavedImage> {
    return this.backend.saveImage(vm, file);
  }

  /**
   * Make a warm image: boot `spec` (a warm-mode guest, e.g. the test guest's cmdline with `warm: true`
   * and ready `CIEL-WARM-READY`), save its memory to `file`, destroy the VM.
   */
  async prepareWarmImage(spec: VmSpec, file: string): Promise<SavedImage & { boot_ms: number }> {
    const { vm, clone_ms } = await this.backend.define(spec);
    try {
      const { boot_ms } = await this.start(vm);
      const saved = await this.saveWarmImage(vm, file);
      return { ...saved, boot_ms: boot_ms + clone_ms };
    } finally {
      await this.destroy(vm);
    }
  }

  /**
   * A new VM restored from a warm image, its identity fixed up over the control channel: a new MAC (this
   * VM's own; the NIC's comes back from the snapshot), `identity.ip`/`vip` on eth0/lo, and the containers
   * started (the first one serves HTTP when it has an address). `CIEL-READY <container>` is then written
   * to its console like a booted guest's. boot_ms covers restore + fix-up (restore_ms and fixup_ms split it).
   */
  async warmStart(spec: VmSpec, image: WarmImage, identity: WarmIdentity = {}): Promise<WarmStarted<B>> {
    const { vm, clone_ms, ...restored } = (await this.backend.restore(spec, image)) as Awaited<ReturnType<B['restore']>>;
    try {
      const t1 = performance.now();
      const res = await this.exec(vm, fixupScript(this.backend.macOf(vm), identity, spec.container), this.po.bootTimeoutMs ?? 90_000);
      if (res.rc !== 0) throw new ProvisionError(vm.name, 'fixup', `identity fix-up of ${vm.name} failed (rc ${res.rc}): ${res.out}`);
      const fixup_ms = performance.now() - t1;
      // from now on this is `spec`'s VM on the saved machine
      const s = image.spec;
      await this.backend.respec(vm, { ...spec, name: vm.name, vcpus: s.vcpus, memMiB: s.memMiB, kernel: s.kernel, initrd: s.initrd });
      return { ...restored, vm, pooled: false, clone_ms, boot_ms: restored.restore_ms + fixup_ms, fixup_ms };
    } catch (err) {
      await this.destroy(vm).catch(() => {});
      throw err;
    }
  }
}
