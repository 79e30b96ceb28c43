// The container level of the controller: a ContainerSampler over one VmSession per VM (vmi/session.ts),
// with Docker ids mapped to friendly names.

import { VmError } from '../common/errors.ts';
import { VmSession, type SampleObserver, type SessionOptions, type SessionSample } from '../vmi/session.ts';
import { vmTarget, type VmTarget } from '../vmi/target.ts';
import type { Sample } from '../vmi/sample.ts';
import type { ContainerSampler } from './autoscaler.ts';
import type { AutoscaleVm } from './config.ts';

export interface SamplerOptions {
  /** Docker id → friendly name (else the sample's own name field, else the id); may be filled in later */
  names?: ReadonlyMap<string, string> | Record<string, string>;
  /**
   * Pause the vCPUs around each decision sample where the backend can (QMP stop/cont, ~1-4 ms): see
   * VmSession.sample. Baseline samples are never paused. Default true.
   */
  consistent?: boolean;
}

interface Watched {
  session: VmSession;
  names: ReadonlyMap<string, string>;
  consistent: boolean;
}

/**
 * The controller's ContainerSampler: a thin adapter over one VmSession per VM (vmi/session.ts), so any
 * backend the session reads (qemu, raw, vmcore, xen) can feed the Autoscaler. sample(vm) reads every
 * container's cgroup counters from the VM's RAM, from outside. After a failed read the session
 * recovers (a guest fault re-reads CR3/slide, a reset guest is re-attached) and the read is retried
 * once; a VM that is gone is attached again on its next read. Samples and failures go to `onSample`
 * and to every observer (observe(): e.g. the Prometheus exporter).
 */
export class MonitorSampler implements ContainerSampler {
  private readonly vms = new Map<string, Watched>();
  private readonly observers = new Set<SampleObserver>();
  /** every sample taken (after names were filled in) */
  onSample?: (s: SessionSample) => void;
  /** samples taken, total time reading guest memory, total time the guest was paused (cost reports) */
  readonly stats = { samples: 0, totalUs: 0, pausedUs: 0 };

  /** `session`: for every VM's VmSession (where builds are, building a missing one, the kernel used) */
  constructor(private readonly sessionOptions: SessionOptions = {}) {}

  /** Attach a VM under its target's name (VmError "NAME: cannot attach: ..." on failure). */
  async attach(target: VmTarget, o: SamplerOptions = {}): Promise<void> {
    if (this.vms.has(target.name)) throw new VmError(target.name, 'is already attached');
    const session = new VmSession(target, this.sessionOptions);
    try {
      await session.attach();
    } catch (e) {
      this.tell((ob) => ob.onError(target.name, e as Error));
      throw e;
    }
    const names = o.names instanceof Map ? o.names : new Map(Object.entries(o.names ?? {}));
    this.vms.set(target.name, { session, names, consistent: o.consistent ?? true });
  }

  /** Hand every sample and failure to `o` too (SampleObserver: the Prometheus exporter is one); returns the undo. */
  observe(o: SampleObserver): () => void {
    this.observers.add(o);
    return () => this.observers.delete(o);
  }

  /** The attached VM's session (its backend: QMP pause/resume, registers). */
  session(vm: string): VmSession | undefined {
    return this.vms.get(vm)?.session;
  }

  /**
   * A baseline sample for the Autoscaler (`containerBaseline: 'kept'`): never paused, so the guest does
   * not stall every interval.
   */
  baseline(vm: string): Promise<Sample> {
    return this.read(vm, false);
  }

  /** One sample to decide on (paused around it when consistent). */
  sample(vm: string): Promise<Sample> {
    return this.read(vm, true);
  }

  private async read(vm: string, decision: boolean): Promise<SessionSample> {
    const w = this.vms.get(vm);
    if (!w) throw new VmError(vm, 'is not attached to the monitor');
    const consistent = decision && w.consistent;
    try {
      // a VM that was gone is attached again here (no-op while attached)
      if (!w.session.attached) await w.session.attach();
      let s: SessionSample;
      try {
        s = await w.session.sample({ consistent });
      } catch (e) {
        const r = await w.session.recover(e);
        if (r !== 'refreshed' && r !== 'reset') throw e;
        // page tables moved under us, or the guest rebooted: one retry with fresh CR3/slide
        if (r === 'reset') await w.session.attach();
        s = await w.session.sample({ consistent });
      }
      return this.finish(w, s);
    } catch (e) {
      this.tell((ob) => ob.onError(vm, e as Error));
      throw e;
    }
  }

  private finish(w: Watched, s: SessionSample): SessionSample {
    for (const c of s.containers) c.name ??= w.names.get(c.id) ?? undefined;
    this.stats.samples++;
    this.stats.totalUs += s.sample_us;
    this.stats.pausedUs += s.pause_us ?? 0;
    this.onSample?.(s);
    this.tell((ob) => ob.onSample(s));
    return s;
  }

  private tell(f: (o: SampleObserver) => void): void {
    for (const o of this.observers) f(o);
  }

  async detach(vm: string): Promise<void> {
    const w = this.vms.get(vm);
    if (!w) return;
    this.vms.delete(vm);
    await w.session.close();
  }

  async close(): Promise<void> {
    for (const vm of [...this.vms.keys()]) await this.detach(vm);
  }
}

/**
 * The target of an origin VM of `ciel autoscale`'s config: its container level is read through QEMU's
 * QMP socket and shared RAM file when the config gives them, else (a libvirt VM) through libvirt's QMP
 * passthrough and the domain's shared RAM (vmi/libvirt-qmp.ts).
 */
export function autoscaleTarget(v: Pick<AutoscaleVm, 'name' | 'kernel' | 'qmp' | 'memory'> & { stats?: AutoscaleVm['stats'] }): VmTarget {
  const kernel = v.kernel !== undefined ? { kernel: v.kernel } : {};
  if (v.qmp === undefined && v.memory === undefined && v.stats?.kind === 'libvirt')
    return vmTarget({ name: v.name, backend: 'libvirt', ...kernel, domain: v.stats.domain, uri: v.stats.uri });
  return vmTarget({ name: v.name, backend: 'qemu', ...kernel, ...(v.qmp !== undefined ? { qmp: v.qmp } : {}), ...(v.memory !== undefined ? { memory: v.memory } : {}) });
}
