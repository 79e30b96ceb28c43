// The multi-VM sampler behind `ciel monitor`: one process, one independent loop per VM.
//
// * Each VM has its own backend (QEMU live, raw memory file, ELF vmcore, Xen), its own interval and
//   its own failures: a VM that cannot be opened (QEMU not there yet, socket gone, no Xen) or whose
//   samples fault (hostile or changing guest memory) is reported through onError and retried with
//   a capped exponential backoff, while the other VMs keep sampling.
// * Intervals are drift-free (next = previous deadline + interval); a late loop does not burst.
// * Container names and images come from the VM's disk image (disk/docker-disk.ts):
//   read once before the first sample, then refreshed in the background (never on the sample path).
// * A vmcore is static: it is sampled once and its loop ends.
import { abortableSleep } from '../common/sleep.ts';
import { ElfCoreBackend } from '../vmi/backends/elf-core.ts';
import type { GuestRegisters, MemoryBackend, PhysRange } from '../vmi/backends/backend.ts';
import { GuestStateError, QemuLiveBackend } from '../vmi/backends/qemu-live.ts';
import { RawFileBackend } from '../vmi/backends/raw-file.ts';
import { XenBackend } from '../vmi/backends/xen.ts';
import type { BackendKind } from './config.ts';
import { BadInputError, CielError, GuestFaultError } from '../common/errors.ts';
import { GuestMonitor } from '../vmi/guest-monitor.ts';
import { findVmcoreinfo, parseVmcoreinfo } from '../vmi/kaslr.ts';
import type { DockerContainerInfo } from '../disk/docker-disk.ts';
import { DiskNamesWatch } from '../disk/names-watch.ts';
import type { ContainerSample, Sample } from '../vmi/sample.ts';

/** One VM to watch. */
export interface DaemonVm {
  /** unique name: the `vm` of samples and metrics */
  name: string;
  backend: BackendKind;
  /** guest kernel release (a build in generated/<release>/); vmcore: taken from the dump's VMCOREINFO when absent */
  kernel?: string;
  /** QMP socket (qemu) */
  qmp?: string;
  /** guest RAM file (qemu: the shared memory-backend-file; raw: a raw physical-memory file) */
  memory?: string;
  /** ELF dump (vmcore) */
  vmcore?: string;
  /** Xen domain id (xen) */
  domid?: number;
  /** disk image (raw or qcow2) holding /var/lib/docker/containers/<id>/config.v2.json */
  disk?: string;
  intervalMs: number;
  /** pause the vCPUs around each sample (qemu, xen) */
  consistent?: boolean;
}

/** A container sample with what the disk says about it. */
export type NamedContainerSample = ContainerSample & { image?: string };

/** What the daemon hands out: a Sample (vm always set) plus the monitor's own health figures. */
export type DaemonSample = Omit<Sample, 'vm' | 'containers'> & {
  vm: string;
  containers: NamedContainerSample[];
  tlb_hit_ratio?: number;
  guest_accesses?: number;
};

export type ErrorKind = 'open' | 'sample' | 'names';

export interface DaemonHandlers {
  onSample(s: DaemonSample, info: Map<string, DockerContainerInfo>): void;
  /** open: the VM could not be attached (retried); sample: one sample failed; names: the disk could not be read */
  onError(vm: string, e: Error, kind: ErrorKind): void;
  /** attach/detach notes for the operator (stderr) */
  onNote?(vm: string, message: string): void;
}

export interface DaemonOptions {
  /** sampling rounds per VM (failed rounds and failed attach attempts count); default: until aborted */
  count?: number;
  signal?: AbortSignal;
  /** backoff between attach attempts: first and maximum delay (default 1 s .. 30 s) */
  retryMinMs?: number;
  retryMaxMs?: number;
  /** a failure to attach on the very first attempt ends that VM's loop with the error (single-VM command line) */
  failFast?: boolean;
}

export interface VmResult {
  vm: string;
  samples: number;
  errors: number;
  /** set when the loop ended on an error (failFast, or a vmcore that cannot be read) */
  fatal?: Error;
}

/** A backend with registers supplied from elsewhere (a raw memory file has none). */
class WithRegisters implements MemoryBackend {
  readonly kind: string;
  constructor(
    private readonly inner: MemoryBackend,
    private readonly regs: GuestRegisters,
  ) {
    this.kind = inner.kind;
  }
  ranges(): PhysRange[] {
    return this.inner.ranges();
  }
  memorySize(): bigint {
    return this.inner.memorySize();
  }
  async registers(): Promise<GuestRegisters> {
    return this.regs;
  }
  pause(): Promise<void> {
    return this.inner.pause();
  }
  resume(): Promise<void> {
    return this.inner.resume();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

const START_KERNEL_MAP = 0xffffffff80000000n;

/**
 * A raw physical-memory file has no CPU state: take the kernel's own page-table root from the
 * VMCOREINFO it left in RAM (SYMBOL(init_top_pgt) - __START_KERNEL_map + phys_base).
 */
export function openRawWithVmcoreinfo(path: string): MemoryBackend {
  const raw = new RawFileBackend(path);
  try {
    const info = findVmcoreinfo(raw);
    if (!info || info.initTopPgt === null || info.physBase === null)
      throw new BadInputError(path, 'no VMCOREINFO with SYMBOL(init_top_pgt) and NUMBER(phys_base) in this memory file: cannot find the page tables');
    const cr3 = info.initTopPgt - START_KERNEL_MAP + info.physBase;
    return new WithRegisters(raw, { cr3, cr4: info.pgtableL5 ? 1n << 12n : 0n });
  } catch (e) {
    void raw.close();
    throw e;
  }
}

/**
 * The kernel release a vmcore was taken from: its VMCOREINFO note (QEMU writes one when the guest
 * registered it through fw_cfg), else the VMCOREINFO text the kernel keeps in its own RAM; or null.
 */
export function vmcoreRelease(b: ElfCoreBackend): string | null {
  const fromNote = b.info.vmcoreinfo ? parseVmcoreinfo(b.info.vmcoreinfo)?.osrelease : undefined;
  return fromNote ?? findVmcoreinfo(b)?.osrelease ?? null;
}

async function openBackend(vm: DaemonVm): Promise<MemoryBackend> {
  switch (vm.backend) {
    case 'qemu':
      if (!vm.qmp || !vm.memory) throw new CielError(`${vm.name}: the qemu backend needs a QMP socket and a memory file`);
      return QemuLiveBackend.open({ memFile: vm.memory, qmpSocket: vm.qmp, vm: vm.name });
    case 'raw':
      if (!vm.memory) throw new CielError(`${vm.name}: the raw backend needs a memory file`);
      return openRawWithVmcoreinfo(vm.memory);
    case 'vmcore':
      if (!vm.vmcore) throw new CielError(`${vm.name}: the vmcore backend needs a dump file`);
      return new ElfCoreBackend(vm.vmcore);
    case 'xen':
      if (vm.domid === undefined) throw new CielError(`${vm.name}: the xen backend needs a domain id`);
      return XenBackend.open(vm.domid);
  }
}

export interface OpenedVm {
  backend: MemoryBackend;
  monitor: GuestMonitor;
  release: string;
}

/** Attach to one VM: its backend and the monitor built for its kernel (slots relocated by the KASLR slide). */
export async function openVm(vm: DaemonVm): Promise<OpenedVm> {
  const backend = await openBackend(vm);
  try {
    let release = vm.kernel;
    if (!release && backend instanceof ElfCoreBackend) release = vmcoreRelease(backend) ?? undefined;
    if (!release) throw new CielError(`${vm.name}: which kernel? give --kernel RELEASE (no VMCOREINFO with OSRELEASE in the dump)`);
    const monitor = await GuestMonitor.open({ release, backend, vm: vm.name });
    return { backend, monitor, release };
  } catch (e) {
    await backend.close().catch(() => {});
    throw e;
  }
}

/** Take one sample of an attached VM (paused around it when asked and possible). */
export async function sampleVm(o: OpenedVm, consistent: boolean): Promise<DaemonSample> {
  if (!consistent) return o.monitor.sample() as DaemonSample;
  const t0 = performance.now();
  await o.backend.pause();
  let s: DaemonSample;
  try {
    s = o.monitor.sample() as DaemonSample;
  } catch (e) {
    await o.backend.resume().catch(() => {});
    throw e;
  }
  await o.backend.resume();
  s.pause_us = Math.round((performance.now() - t0) * 1000);
  return s;
}

/** Names of one VM's containers: the first read is awaited, later ones run in the background. */
class VmNames {
  private readonly known = new Map<string, DockerContainerInfo>();
  private readonly watch: DiskNamesWatch;

  constructor(image: string, report: (e: Error) => void) {
    this.watch = new DiskNamesWatch(
      image,
      (m) => {
        for (const [id, info] of m) this.known.set(id, info);
      },
      report,
    );
  }

  /** Ask the disk about `ids` (all containers when omitted); errors are reported once per distinct message. */
  refresh(ids?: string[]): Promise<void> {
    return this.watch.refresh(ids);
  }

  /** Names for the containers of `s` (a copy of the map, for the exporter). */
  apply(s: DaemonSample): Map<string, DockerContainerInfo> {
    const info = new Map<string, DockerContainerInfo>();
    for (const c of s.containers) {
      const i = this.known.get(c.id);
      if (!i) continue;
      info.set(c.id, i);
      if (c.name === undefined) c.name = i.name;
      if (i.image) c.image = i.image;
    }
    // cheap when nothing changed (one stat); re-reads the disk when the image changed or an id is new
    void this.refresh(s.containers.map((c) => c.id));
    return info;
  }

  settle(): Promise<void> {
    return this.watch.settle();
  }
}


const asError = (e: unknown) => (e instanceof Error ? e : new Error(String(e)));

/** Run one VM's loop until aborted, `count` rounds, or (vmcore) its one sample. */
export async function runVm(vm: DaemonVm, h: DaemonHandlers, o: DaemonOptions = {}): Promise<VmResult> {
  const res: VmResult = { vm: vm.name, samples: 0, errors: 0 };
  const retryMin = o.retryMinMs ?? 1000;
  const retryMax = o.retryMaxMs ?? 30_000;
  const once = vm.backend === 'vmcore';
  const names = vm.disk ? new VmNames(vm.disk, (e) => h.onError(vm.name, e, 'names')) : null;
  let rounds = 0;
  let backoff = retryMin;
  let attachedBefore = false;
  let session: OpenedVm | null = null;
  const detach = async () => {
    const s = session;
    session = null;
    if (s) {
      s.monitor.close();
      await s.backend.close().catch(() => {});
    }
  };
  const more = () => !o.signal?.aborted && (o.count === undefined || rounds < o.count);
  try {
    if (names) await names.refresh();
    let next = performance.now();
    while (more()) {
      if (!session) {
        try {
          session = await openVm(vm);
          backoff = retryMin;
          h.onNote?.(vm.name, `${attachedBefore ? 're-attached' : 'attached'} (${session.backend.kind}, kernel ${session.release}, KASLR slide 0x${session.monitor.slide.toString(16)})`);
          attachedBefore = true;
          next = performance.now();
        } catch (e) {
          const err = asError(e);
          rounds++;
          res.errors++;
          if (once || (o.failFast && !attachedBefore)) {
            res.fatal = err;
            return res;
          }
          h.onError(vm.name, new CielError(`cannot attach: ${err.message} (retrying in ${backoff < 1000 ? `${backoff} ms` : `${Math.round(backoff / 1000)} s`})`), 'open');
          await abortableSleep(backoff, o.signal);
          backoff = Math.min(backoff * 2, retryMax);
          continue;
        }
      }
      try {
        const s = await sampleVm(session, vm.consistent === true && !once);
        s.vm = vm.name;
        const info = names ? names.apply(s) : new Map<string, DockerContainerInfo>();
        rounds++;
        res.samples++;
        h.onSample(s, info);
      } catch (e) {
        const err = asError(e);
        rounds++;
        res.errors++;
        if (once) {
          res.fatal = err;
          return res;
        }
        h.onError(vm.name, err, 'sample');
        // a fault is bad or changing guest memory (this sample only), but a reboot also shows up as
        // faults first: re-reading CR3 and the KASLR slide then reports the reset the backend saw
        const state =
          err instanceof GuestFaultError ? await session.monitor.refresh().then(() => null, (x: unknown) => x) : err;
        if (state instanceof GuestStateError) {
          // QEMU gone, or the guest was reset (new page tables, new KASLR slide): attach again
          await detach();
          h.onNote?.(vm.name, state.status === 'reset' ? 'guest was reset; re-attaching' : 'detached; retrying');
          if (state.status !== 'reset') {
            await abortableSleep(backoff, o.signal);
            backoff = Math.min(backoff * 2, retryMax);
          }
          continue;
        }
        if (!(err instanceof GuestFaultError)) {
          // anything else (QMP error, backend failure): detach and attach again
          await detach();
          continue;
        }
      }
      if (once) break;
      next += vm.intervalMs;
      const wait = next - performance.now();
      if (wait > 0) await abortableSleep(wait, o.signal);
      else next = performance.now(); // late: do not burst to catch up
    }
    return res;
  } finally {
    await detach();
    await names?.settle();
  }
}

/** Run every VM's loop concurrently; resolves when all have ended (abort, count, or fatal). */
export async function runDaemon(vms: DaemonVm[], h: DaemonHandlers, o: DaemonOptions = {}): Promise<VmResult[]> {
  const names = new Set<string>();
  for (const v of vms) {
    if (names.has(v.name)) throw new CielError(`two VMs are named ${JSON.stringify(v.name)}`);
    names.add(v.name);
  }
  return Promise.all(
    vms.map((vm) =>
      runVm(vm, h, o).catch((e: unknown) => {
        // a bug in one VM's loop must not take the others down
        const err = asError(e);
        h.onError(vm.name, err, 'sample');
        return { vm: vm.name, samples: 0, errors: 1, fatal: err } satisfies VmResult;
      }),
    ),
  );
}
