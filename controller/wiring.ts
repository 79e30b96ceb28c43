// The real parts behind the Autoscaler's interfaces:
//  * ProcVmStats: VM-level stats (the cheap level of two-level monitoring) for QEMU processes started
//    directly (not by a provisioner): CPU time, RSS and host-side I/O bytes from /proc/<qemu pid>.
//    Provisioner-managed VMs are answered by the provisioner's own vmStats (fallback).
//  * MonitorSampler: the container level, through the compiled VMI monitor (GuestMonitor on the VM's
//    shared RAM file + QMP for CR3), with Docker ids mapped to friendly names.
//  * TrackingProvisioner: remembers the VMs it handed out, so a balancer can find a replica's address.
//  * timeline(): detect/decide/clone/boot/ready times of one scale-out, from the controller's events.

import { GuestFaultError } from '../common/errors.ts';
import type { GuestMonitor } from '../vmi/guest-monitor.ts';
import { openQemuMonitor } from '../vmi/qemu-attach.ts';
import { QemuProcStats } from '../vmstats/qemu-proc-stats.ts';
import type { QemuLiveBackend } from '../vmi/backends/qemu-live.ts';
import type { Acquired, Provisioner, ReleaseMode, Vm, VmSpec } from '../provisioners/provisioner.ts';
import type { Sample } from '../vmi/sample.ts';
import type { ContainerSampler, ReplicaProvisioner, VmStatsSource } from './autoscaler.ts';
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
    throw new Error(`no VM-level stats source for ${vm}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Container level (VMI)

export interface MonitorTarget {
  qmpSocket: string;
  memFile: string;
  /** guest kernel release of the generated monitor build (generated/<release>/) */
  release: string;
  /** Docker id → friendly name (else the sample's own name field, else the id) */
  names?: ReadonlyMap<string, string> | Record<string, string>;
  /**
   * Pause the vCPUs around each sample (QMP stop/cont, ~1-4 ms): a consistent snapshot. Without it a
   * read can interleave with the guest flushing its per-CPU cgroup counters (the monitor adds the
   * not-yet-flushed per-CPU deltas to the flushed total; a flush between the two reads counts a delta
   * twice), which shows up as an impossible CPU rate for one sample. Default true.
   */
  consistent?: boolean;
}

interface Attached {
  backend: QemuLiveBackend;
  monitor: GuestMonitor;
  names: ReadonlyMap<string, string>;
  consistent: boolean;
  /** samples of one VM are serialised (a pause/resume pair must not interleave with another) */
  lock: Promise<unknown>;
}

/**
 * ContainerSampler over the compiled monitor: sample(vm) reads every container's cgroup counters from the
 * VM's RAM, from outside. A guest fault (memory changing under the reader) re-reads CR3/slide and
 * retries once. `onSample` sees every sample (live view, plot).
 */
export class MonitorSampler implements ContainerSampler {
  private readonly vms = new Map<string, Attached>();
  /** every sample taken (after names were filled in) */
  onSample?: (s: Sample) => void;
  /** samples taken, total time reading guest memory, total time the guest was paused (cost reports) */
  readonly stats = { samples: 0, totalUs: 0, pausedUs: 0 };

  async attach(vm: string, t: MonitorTarget): Promise<void> {
    if (this.vms.has(vm)) throw new Error(`VM ${vm} is already attached`);
    const { backend, monitor } = await openQemuMonitor({ qmpSocket: t.qmpSocket, memFile: t.memFile, release: t.release, vm });
    const names = t.names instanceof Map ? t.names : new Map(Object.entries(t.names ?? {}));
    this.vms.set(vm, { backend, monitor, names, consistent: t.consistent ?? true, lock: Promise.resolve() });
  }

  /** The attached VM's live backend (QMP pause/resume, registers). */
  backend(vm: string): QemuLiveBackend | undefined {
    return this.vms.get(vm)?.backend;
  }

  /** One sample without pausing (synchronous; the read can be torn, see MonitorTarget.consistent). */
  sampleNow(vm: string): Sample {
    const a = this.vms.get(vm);
    if (!a) throw new Error(`VM ${vm} is not attached to the monitor`);
    return this.finish(vm, a, a.monitor.sample());
  }

  private finish(vm: string, a: Attached, s: Sample): Sample {
    s.vm = vm;
    for (const c of s.containers) c.name ??= a.names.get(c.id) ?? undefined;
    this.stats.samples++;
    this.stats.totalUs += s.sample_us;
    this.stats.pausedUs += s.pause_us ?? 0;
    this.onSample?.(s);
    return s;
  }

  /**
   * A baseline sample for the Autoscaler (`containerBaseline: 'kept'`): never paused, so the guest does
   * not stall every interval.
   */
  baseline(vm: string): Promise<Sample> {
    return this.read(vm, false);
  }

  /** One sample (paused around it when consistent); a guest fault refreshes CR3/slide and retries once. */
  sample(vm: string): Promise<Sample> {
    return this.read(vm, true);
  }

  /** Reads of one VM are serialised: a pause/resume pair must not interleave with another read. */
  private read(vm: string, pausable: boolean): Promise<Sample> {
    const a = this.vms.get(vm);
    if (!a) return Promise.reject(new Error(`VM ${vm} is not attached to the monitor`));
    const once = async (): Promise<Sample> => {
      if (!pausable || !a.consistent) return a.monitor.sample();
      const t0 = performance.now();
      await a.backend.pause();
      let s: Sample;
      try {
        s = a.monitor.sample();
      } finally {
        await a.backend.resume();
      }
      s.pause_us = Math.round((performance.now() - t0) * 1000);
      return s;
    };
    const run = async (): Promise<Sample> => {
      try {
        return this.finish(vm, a, await once());
      } catch (e) {
        if (!(e instanceof GuestFaultError)) throw e;
        // page tables moved under us, or the guest rebooted in place: one retry with fresh CR3/slide
        await a.monitor.refresh();
        return this.finish(vm, a, await once());
      }
    };
    const p = a.lock.then(run, run);
    a.lock = p.catch(() => {});
    return p;
  }

  async detach(vm: string): Promise<void> {
    const a = this.vms.get(vm);
    if (!a) return;
    this.vms.delete(vm);
    a.monitor.close();
    await a.backend.close();
  }

  async close(): Promise<void> {
    for (const vm of [...this.vms.keys()]) await this.detach(vm);
  }
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
