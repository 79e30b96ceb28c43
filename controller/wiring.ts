// The real parts behind the Autoscaler's interfaces:
//  * ProcVmStats: VM-level stats (the cheap level of two-level monitoring) for QEMU processes started
//    directly (not by a provisioner): CPU time, RSS and host-side I/O bytes from /proc/<qemu pid>.
//    Provisioner-managed VMs are answered by the provisioner's own vmStats (fallback).
//  * MonitorSampler: the container level, through one VmSession per VM (vmi/session.ts: any backend),
//    with Docker ids mapped to friendly names.
//  * TrackingProvisioner: remembers the VMs it handed out, so a balancer can find a replica's address.
//  * timeline(): detect/decide/clone/boot/ready times of one scale-out, from the controller's events.

import { VmError } from '../common/errors.ts';
import { VmSession, type SampleObserver, type SessionSample } from '../vmi/session.ts';
import { vmTarget, type VmTarget } from '../vmi/target.ts';
import { QemuProcStats } from '../vmstats/qemu-proc-stats.ts';
import type { Acquired, Provisioner, ReleaseMode, Vm, VmSpec } from '../provisioners/provisioner.ts';
import type { Sample } from '../vmi/sample.ts';
import type { ContainerSampler, ReplicaProvisioner, VmStatsSource } from './autoscaler.ts';
import type { AutoscaleVm } from './config.ts';
import type { ControllerEvent, VmStats } from './types.ts';

// ---------------------------------------------------------------------------------------------
// VM level

/** A QEMU process started outside any provisioner (e.g. the test guest of testbed/guest/boot.ts). */
export interface DirectQemu {
  name: string;
  pid: number;
  vcpus: number;
  memMiB: number;
}

/**
 * One reading of a directly started QEMU: CPU time of all its threads in ns (as libvirt's cpu.time
 * counts the VM's cgroup), VmRSS, and the bytes it moved through the host's block layer for the guest's
 * disks. No NIC counters (0). `proc` keeps per-thread state between readings (see qemu-proc-stats.ts).
 */
export function readProcVmStats(q: DirectQemu, proc = new QemuProcStats(q.pid)): VmStats {
  const time = new Date().toISOString();
  const r = proc.read();
  return {
    time,
    vm: q.name,
    vcpus: q.vcpus,
    cpu_time_ns: r.cpu_time_ns,
    memory_used_bytes: r.rss_bytes,
    memory_total_bytes: q.memMiB * 1024 * 1024,
    block_rd_bytes: r.read_bytes,
    block_wr_bytes: r.write_bytes,
    net_rx_bytes: 0,
    net_tx_bytes: 0,
  };
}

/** VM-level stats for direct QEMU processes, else from a fallback (a provisioner's vmStats). */
export class ProcVmStats implements VmStatsSource {
  private readonly direct = new Map<string, { q: DirectQemu; proc: QemuProcStats }>();
  constructor(private readonly fallback?: Pick<Provisioner, 'vmStats'>) {}

  add(q: DirectQemu): this {
    this.direct.set(q.name, { q, proc: new QemuProcStats(q.pid) });
    return this;
  }

  remove(name: string): void {
    this.direct.delete(name);
  }

  async vmStats(vm: string): Promise<VmStats> {
    const d = this.direct.get(vm);
    if (d) return readProcVmStats(d.q, d.proc);
    if (this.fallback) return this.fallback.vmStats(vm);
    throw new VmError(vm, 'no VM-level stats source (neither a QEMU pid nor a fallback)');
  }
}

// ---------------------------------------------------------------------------------------------
// Container level (VMI)

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

  /** Attach a VM under its target's name (VmError "NAME: cannot attach: ..." on failure). */
  async attach(target: VmTarget, o: SamplerOptions = {}): Promise<void> {
    if (this.vms.has(target.name)) throw new VmError(target.name, 'is already attached');
    const session = new VmSession(target);
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
 * The target of an origin VM of `ciel autoscale`'s config: its container level is read through QEMU
 * (QMP socket + shared RAM file).
 */
export function autoscaleTarget(v: Pick<AutoscaleVm, 'name' | 'kernel' | 'qmp' | 'memory'>): VmTarget {
  return vmTarget({ name: v.name, backend: 'qemu', kernel: v.kernel, qmp: v.qmp, memory: v.memory });
}

// ---------------------------------------------------------------------------------------------
// Provisioner wrapper

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

// ---------------------------------------------------------------------------------------------
// Timeline of one scale-out

export interface TimedEvent {
  /** host wall clock (ms since the epoch) when the event was emitted */
  at: number;
  e: ControllerEvent;
}

export interface ScaleOutTimeline {
  container: string;
  replica: string;
  pooled: boolean;
  /** load crossed the threshold → first VM-level detection (vm_hot) */
  detect_ms: number;
  /** detection → scale-out decision (container-level sample, choice, sizing) */
  decide_ms: number;
  /** provisioner: disk clone + define (0 when pooled) */
  clone_ms: number;
  /** provisioner: start/resume until the replica's ready line */
  boot_ms: number;
  /** end to end: load crossed the threshold → replica registered with the balancer (serving) */
  ready_ms: number;
  /** wall times (ms since the epoch) of the four milestones */
  at: { crossed: number; detected: number; decided: number; ready: number };
}

/**
 * The first scale-out of `container` after `crossedAt` (host ms): detection = the first vm_hot of the
 * decision's VM at or after crossedAt (else the container_hot just before the decision), decision =
 * the scale_out decision, ready = its scaled_out event (emitted after the balancer registered it).
 * Returns undefined while the scale-out has not completed.
 */
export function timeline(events: readonly TimedEvent[], container: string, crossedAt: number): ScaleOutTimeline | undefined {
  const after = events.filter((x) => x.at >= crossedAt);
  const dec = after.find((x) => x.e.type === 'decision' && x.e.action === 'scale_out' && x.e.container === container);
  if (!dec || dec.e.type !== 'decision') return undefined;
  const vm = dec.e.vm;
  const det =
    after.find((x) => x.e.type === 'vm_hot' && x.e.vm === vm && x.at <= dec.at) ??
    after.find((x) => x.e.type === 'container_hot' && x.e.container === container && x.at <= dec.at) ??
    dec;
  const out = after.find((x) => x.at >= dec.at && x.e.type === 'scaled_out' && x.e.container === container);
  if (!out || out.e.type !== 'scaled_out') return undefined;
  return {
    container,
    replica: out.e.replica ?? '',
    pooled: out.e.pooled ?? false,
    detect_ms: det.at - crossedAt,
    decide_ms: dec.at - det.at,
    clone_ms: out.e.clone_ms ?? 0,
    boot_ms: out.e.boot_ms ?? 0,
    ready_ms: out.at - crossedAt,
    at: { crossed: crossedAt, detected: det.at, decided: dec.at, ready: out.at },
  };
}
