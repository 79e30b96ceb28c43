// One VM, read from outside: the one way `ciel monitor` (monitor/loop.ts) and `ciel autoscale`
// (controller/monitor-sampler.ts, MonitorSampler) read a guest.
//
// API (stable: other parts build on it):
//   const s = new VmSession(target)        // a VmTarget (vmi/target.ts): qemu, libvirt, raw, vmcore or xen
//   await s.attach()                       // backend + the monitor built for the kernel, slots moved by
//                                          // the KASLR slide; failure: VmError "NAME: cannot attach: ..."
//   await s.sample({ consistent: true })   // paused around the read (QMP stop/cont, also through libvirt; xc_domain_pause)
//                                          // where the backend can pause; pause_us then set
//   await s.sample()                       // a baseline read: never paused
//   await s.recover(err)                   // after a failed sample: 'refreshed' | 'kept' | 'reset' |
//                                          // 'gone' | 'detached' (see Recovery)
//   await s.refresh()                      // re-read CR3/CR4 and the KASLR slide
//   await s.reattach()                     // detach + attach: a reset guest (new CR3, new KASLR slide)
//   await s.close()                        // detach; attach() may be called again
//   s.attached, s.name, s.kind, s.canPause, s.release, s.slide, s.attaches
//   s.backend, s.monitor                   // the attached parts (tests, benches: QMP, raw reads)
//   VmSession.open(target)                 // new + attach
//   SampleObserver { onSample(s, info?), onError(vm, e) }
//                                          // what a session's user feeds (monitor/prometheus.ts is one;
//                                          // MonitorSampler.observe(o), the monitor loop's handlers)
// Every operation of one session is serialised: a pause/resume pair never interleaves with another
// read, and an attach never runs under a sample. Errors name the VM: VmError (or GuestStateError, a
// VmError) whose `cause` is the underlying error (GuestFaultError, BadInputError, QMP, ...).
// A session's user hands its samples on to SampleObservers (the Prometheus exporter is one) once it
// has added what it knows (names from the disk, from the config).
import { CielError, GuestFaultError, VmError } from '../common/errors.ts';
import type { MemoryBackend } from './backends/backend.ts';
import { ElfCoreBackend } from './backends/elf-core.ts';
import { GuestStateError, QemuLiveBackend } from './backends/qemu-live.ts';
import { RawFileBackend } from './backends/raw-file.ts';
import { openLibvirtBackend } from './backends/libvirt-live.ts';
import { XenBackend } from './backends/xen.ts';
import { GuestMonitor } from './guest-monitor.ts';
import { parseVmcoreinfo } from './kaslr.ts';
import { GuestReleaseError } from './guest-release.ts';
import { checkBuildFitsGuest, KernelMismatchError, NoKernelBuildError, readGuestKernel, sourceText, type GuestKernel } from './kernel-identity.ts';
import { hasBuild, loadBuild } from '../common/build-artifact.ts';
import type { Sample } from './sample.ts';
import { canPause, type BackendKind, type VmTarget } from './target.ts';

/** A sample of a session: the VM always named, plus the monitor's own health figures. */
export type SessionSample = Sample & {
  vm: string;
  /** hit ratio of the guest-address translation cache during this sample (0..1) */
  tlb_hit_ratio?: number;
  /** guest memory accesses of this sample */
  guest_accesses?: number;
};

/**
 * A container's resource limits as its runtime applied them to its cgroup, in cgroup units
 * (cAdvisor's container_spec_*). A field is absent when it is not known (or was garbage).
 */
export interface ContainerLimits {
  /** memory limit in bytes; 0 = unlimited */
  memoryBytes?: number;
  /** memory + swap limit in bytes (memsw); 0 = unlimited */
  memorySwapBytes?: number;
  /** soft limit (memory.low / soft_limit_in_bytes) in bytes; 0 = none */
  memoryReservationBytes?: number;
  /** cpu.shares (cgroup v1 scale, 2..262144; 1024 when not set) */
  cpuShares?: number;
  /** CFS period in microseconds */
  cpuPeriodUs?: number;
  /** CFS quota in microseconds per period; 0 = none */
  cpuQuotaUs?: number;
}

/** What is known about a container besides the sample (from the guest's disk: name, image, labels, limits). */
export interface ContainerInfo {
  name?: string;
  image?: string;
  /** the runtime's labels (Docker's Config.Labels), as written: keys and values are guest data */
  labels?: Readonly<Record<string, string>>;
  limits?: ContainerLimits;
}

/** Anyone who wants a session user's samples as they are taken (the Prometheus exporter, a plot). */
export interface SampleObserver {
  /** a sample of `s.vm`; `info` by container id when the user knows more (names from the disk) */
  onSample(s: SessionSample, info?: ReadonlyMap<string, ContainerInfo>): void;
  /** an attach or a sample of `vm` failed */
  onError(vm: string, e: Error): void;
}

/**
 * What recover() did after a failed sample:
 * - refreshed: a guest fault (memory changing under the reader); CR3 and the slide were re-read
 * - kept: a guest fault, and the refresh failed for another reason; still attached, try again later
 * - reset: the guest was reset (new page tables, new KASLR slide); detached: attach again now
 * - gone: QEMU (or the domain) is gone or not running; detached: attach again after a while
 * - detached: any other failure (QMP error, backend failure); detached: attach again
 */
export type Recovery = 'refreshed' | 'kept' | 'reset' | 'gone' | 'detached';

/** The kernel an attach settled on, for the operator (`kernel 6.1.0-56-amd64 (read from the guest)`). */
export interface KernelChoice {
  vm: string;
  release: string;
  /** true: the target named it (--kernel, "kernel"); false: read from the guest */
  given: boolean;
  /** what the guest's memory says (absent when it tells nothing and the release was given) */
  guest?: GuestKernel;
}

export interface SessionOptions {
  /** where the monitor builds are (default generated/) */
  outRoot?: string;
  /**
   * Called when the guest's kernel (read from its memory, no release given) has no build yet: make
   * one in outRoot. The runtime never loads the compiler itself; the command line passes a function
   * that imports it only then. Without it, a missing build is a NoKernelBuildError.
   */
  provideBuild?: (release: string, vm: string) => Promise<void>;
  /** told at every attach which kernel was used and where it came from */
  onKernel?: (k: KernelChoice) => void;
}

interface Attached {
  backend: MemoryBackend;
  monitor: GuestMonitor;
  release: string;
}

/** Open the guest-memory backend a target names. */
async function openBackend(t: VmTarget): Promise<MemoryBackend> {
  switch (t.backend) {
    case 'qemu':
      return QemuLiveBackend.open({ memFile: t.memory, qmpSocket: t.qmp, vm: t.name });
    case 'libvirt':
      return openLibvirtBackend({ vm: t.name, domain: t.domain, uri: t.uri });
    case 'raw':
      return RawFileBackend.openWithVmcoreinfo(t.memory);
    case 'vmcore':
      return new ElfCoreBackend(t.vmcore);
    case 'xen':
      return XenBackend.open(t.domid);
  }
}

const asError = (e: unknown) => (e instanceof Error ? e : new Error(String(e)));

/** The error a sample or attach of `vm` failed with, naming the VM (unchanged when it already does). */
function naming(vm: string, e: unknown, what?: string): VmError {
  const err = asError(e);
  if (err instanceof VmError && err.vm === vm && !what) return err;
  const detail = err instanceof VmError && err.vm === vm ? err.detail : err.message;
  return new VmError(vm, what ? `${what}: ${detail}` : detail, { cause: err });
}

/** The error under a session's VmError (what the backend or the monitor threw). */
function causeOf(e: unknown): unknown {
  return e instanceof VmError && !(e instanceof GuestStateError) && e.cause !== undefined ? e.cause : e;
}

export class VmSession {
  private state: Attached | null = null;
  /** every operation waits for the one before it */
  private queue: Promise<unknown> = Promise.resolve();
  /** successful attaches so far (a re-attach makes it 2 or more) */
  attaches = 0;

  constructor(
    readonly target: VmTarget,
    private readonly opts: SessionOptions = {},
  ) {}

  /** A session already attached. */
  static async open(target: VmTarget, opts: SessionOptions = {}): Promise<VmSession> {
    const s = new VmSession(target, opts);
    await s.attach();
    return s;
  }

  get name(): string {
    return this.target.name;
  }

  get kind(): BackendKind {
    return this.target.backend;
  }

  /** the backend can stop the vCPUs around a read (qemu, xen) */
  get canPause(): boolean {
    return canPause(this.target.backend);
  }

  get attached(): boolean {
    return this.state !== null;
  }

  /** guest kernel release of the attached monitor (a vmcore's from its VMCOREINFO when not given) */
  get release(): string {
    return this.current().release;
  }

  /** KASLR slide found at the last attach or refresh */
  get slide(): bigint {
    return this.current().monitor.slide;
  }

  get backend(): MemoryBackend {
    return this.current().backend;
  }

  get monitor(): GuestMonitor {
    return this.current().monitor;
  }

  /** Attach (no-op when attached). VmError "NAME: cannot attach: ..." with the cause. */
  attach(): Promise<void> {
    return this.serial(() => this.attachNow());
  }

  /**
   * One sample. consistent: the vCPUs are paused around the read where the backend can pause, and
   * pause_us says for how long (a read can otherwise interleave with the guest flushing its per-CPU
   * cgroup counters, counting a delta twice: an impossible CPU rate for one sample). Without it: a
   * baseline read, never paused. Throws a VmError naming the VM (cause: GuestFaultError, ...).
   */
  sample(o: { consistent?: boolean } = {}): Promise<SessionSample> {
    return this.serial(async () => {
      try {
        return await this.read(o.consistent === true);
      } catch (e) {
        throw naming(this.name, e);
      }
    });
  }

  /** Re-read CR3/CR4 and the KASLR slide (after a fault, or a reboot in place). */
  refresh(): Promise<void> {
    return this.serial(async () => {
      try {
        await this.current().monitor.refresh();
      } catch (e) {
        throw naming(this.name, e);
      }
    });
  }

  /**
   * After a failed sample: a guest fault is bad or changing guest memory (that sample only), but a
   * reboot also shows up as faults first, so the page tables and slide are re-read, which reports a
   * reset the backend saw. A reset or a gone guest, or any other failure, detaches the session.
   */
  recover(e: unknown): Promise<Recovery> {
    return this.serial(async () => {
      const a = this.state;
      if (!a) return 'detached';
      let err = causeOf(e);
      if (err instanceof GuestFaultError) {
        try {
          await a.monitor.refresh();
          return 'refreshed';
        } catch (x) {
          if (!(x instanceof GuestStateError)) return 'kept';
          err = x;
        }
      }
      await this.detachNow();
      if (err instanceof GuestStateError) return err.status === 'reset' ? 'reset' : 'gone';
      return 'detached';
    });
  }

  /** Detach and attach again: a new backend, CR3 and KASLR slide (after a guest reset). */
  reattach(): Promise<void> {
    return this.serial(async () => {
      await this.detachNow();
      await this.attachNow();
    });
  }

  /** Detach: the monitor and the backend are closed (attach() may be called again). */
  close(): Promise<void> {
    return this.serial(() => this.detachNow());
  }

  private serial<T>(op: () => Promise<T>): Promise<T> {
    const p = this.queue.then(op, op);
    this.queue = p.catch(() => {});
    return p;
  }

  private current(): Attached {
    if (!this.state) throw new VmError(this.name, 'not attached');
    return this.state;
  }

  private async attachNow(): Promise<void> {
    if (this.state) return;
    const t = this.target;
    let backend: MemoryBackend;
    try {
      backend = await openBackend(t);
    } catch (e) {
      throw naming(this.name, e, 'cannot attach');
    }
    try {
      const release = await this.chooseKernel(backend);
      const monitor = await GuestMonitor.open({ release, backend, vm: t.name, outRoot: this.opts.outRoot });
      this.state = { backend, monitor, release };
      this.attaches++;
    } catch (e) {
      await backend.close().catch(() => {});
      // already says plainly what is wrong and names the VM
      if (e instanceof KernelMismatchError || e instanceof NoKernelBuildError || e instanceof GuestReleaseError) throw e;
      throw naming(this.name, e, 'cannot attach');
    }
  }

  /**
   * The release whose build reads this guest: the target's, checked against what the guest's memory
   * says; or, none given, the guest's own, built on first use (provideBuild). Read at every attach: a
   * guest may have rebooted into another kernel.
   */
  private async chooseKernel(backend: MemoryBackend): Promise<string> {
    const t = this.target;
    const note = backend instanceof ElfCoreBackend && backend.info.vmcoreinfo ? parseVmcoreinfo(backend.info.vmcoreinfo)?.osrelease : undefined;
    let guest: GuestKernel | undefined;
    try {
      guest = readGuestKernel(backend, t.name, note);
    } catch (e) {
      // with a release given, a guest that tells nothing (not booted far, no VMCOREINFO) is read on trust
      if (!(e instanceof GuestReleaseError) || !t.kernel) throw e;
    }
    const release = t.kernel ?? guest!.release;
    if (!t.kernel && !hasBuild(release, this.opts.outRoot)) {
      if (!this.opts.provideBuild)
        throw new NoKernelBuildError(t.name, release, `no monitor build for kernel ${release} (${sourceText(guest!.source)}): run \`ciel build --kernel ${release}\``);
      await this.opts.provideBuild(release, t.name);
    }
    if (guest) checkBuildFitsGuest(t.name, guest, loadBuild(release, this.opts.outRoot).manifest);
    this.opts.onKernel?.({ vm: t.name, release, given: t.kernel !== undefined, ...(guest ? { guest } : {}) });
    return release;
  }

  private async read(consistent: boolean): Promise<SessionSample> {
    const a = this.current();
    const stamp = (s: Sample) => Object.assign(s, { vm: this.name }) as SessionSample;
    if (!consistent || !this.canPause) return stamp(a.monitor.sample());
    const t0 = performance.now();
    // false: already paused by someone else, so already still -- and theirs to resume, not ours
    const paused = await a.backend.pause();
    let s: Sample;
    try {
      s = a.monitor.sample();
    } catch (e) {
      // the guest must run again whatever happened to the read; the read's error is the one to report
      if (paused) await a.backend.resume().catch(() => {});
      throw e;
    }
    if (paused) await a.backend.resume();
    s.pause_us = paused ? Math.round((performance.now() - t0) * 1000) : 0;
    return stamp(s);
  }

  private async detachNow(): Promise<void> {
    const a = this.state;
    this.state = null;
    if (!a) return;
    a.monitor.close();
    await a.backend.close().catch(() => {});
  }
}
