// The multi-VM sampler behind `ciel monitor`: one process, one independent loop per VM, each over
// its own VmSession (vmi/session.ts).
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
import { CielError, VmError } from '../common/errors.ts';
import type { DockerContainerInfo } from '../disk/docker-disk.ts';
import { DiskNamesWatch } from '../disk/names-watch.ts';
import type { ContainerSample } from '../vmi/sample.ts';
import { VmSession, type SessionOptions, type SessionSample } from '../vmi/session.ts';
import type { VmTarget } from '../vmi/target.ts';

/** One VM to watch: what to attach, and how this loop samples it. */
export type MonitoredVm = VmTarget & {
  intervalMs: number;
  /** disk image (raw or qcow2) holding /var/lib/docker/containers/<id>/config.v2.json */
  disk?: string;
  /** pause the vCPUs around each sample (qemu, xen) */
  consistent?: boolean;
};

/** A container sample with what the disk says about it. */
export type NamedContainerSample = ContainerSample & { image?: string };

/** What the loop hands out: a session's sample, its containers named from the disk. */
export type NamedSample = Omit<SessionSample, 'containers'> & { containers: NamedContainerSample[] };

export type ErrorKind = 'open' | 'sample' | 'names';

export interface LoopHandlers {
  onSample(s: NamedSample, info: Map<string, DockerContainerInfo>): void;
  /** open: the VM could not be attached (retried); sample: one sample failed; names: the disk could not be read */
  onError(vm: string, e: Error, kind: ErrorKind): void;
  /** attach/detach notes for the operator (stderr) */
  onNote?(vm: string, message: string): void;
}

export interface LoopOptions {
  /** sampling rounds per VM (failed rounds and failed attach attempts count); default: until aborted */
  count?: number;
  signal?: AbortSignal;
  /** backoff between attach attempts: first and maximum delay (default 1 s .. 30 s) */
  retryMinMs?: number;
  retryMaxMs?: number;
  /** a failure to attach on the very first attempt ends that VM's loop with the error (single-VM command line) */
  failFast?: boolean;
  /** a VM that went away (QEMU exited) ends its loop with the error instead of being retried (single-VM
   *  command line: nobody will start that QEMU again under the same socket; a --config daemon retries) */
  endWhenGone?: boolean;
  /** for every VM's session: where builds are, how a missing one is made, who is told the kernel used */
  session?: SessionOptions;
}

export interface VmResult {
  vm: string;
  samples: number;
  errors: number;
  /** set when the loop ended on an error (failFast, or a vmcore that cannot be read) */
  fatal?: Error;
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
  apply(s: NamedSample): Map<string, DockerContainerInfo> {
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
export async function runVm(vm: MonitoredVm, h: LoopHandlers, o: LoopOptions = {}): Promise<VmResult> {
  const res: VmResult = { vm: vm.name, samples: 0, errors: 0 };
  const retryMin = o.retryMinMs ?? 1000;
  const retryMax = o.retryMaxMs ?? 30_000;
  const once = vm.backend === 'vmcore';
  const consistent = vm.consistent === true && !once;
  const names = vm.disk ? new VmNames(vm.disk, (e) => h.onError(vm.name, e, 'names')) : null;
  const session = new VmSession(vm, o.session);
  let rounds = 0;
  let backoff = retryMin;
  const more = () => !o.signal?.aborted && (o.count === undefined || rounds < o.count);
  const waitBackoff = async () => {
    await abortableSleep(backoff, o.signal);
    backoff = Math.min(backoff * 2, retryMax);
  };
  try {
    if (names) await names.refresh();
    let next = performance.now();
    while (more()) {
      if (!session.attached) {
        try {
          await session.attach();
          backoff = retryMin;
          h.onNote?.(vm.name, `${session.attaches > 1 ? 're-attached' : 'attached'} (${session.backend.kind}, kernel ${session.release}, KASLR slide 0x${session.slide.toString(16)})`);
          next = performance.now();
        } catch (e) {
          const err = asError(e);
          rounds++;
          res.errors++;
          if (once || (o.failFast && session.attaches === 0)) {
            res.fatal = err;
            return res;
          }
          const detail = err instanceof VmError && err.vm === vm.name ? err.detail : `cannot attach: ${err.message}`;
          h.onError(vm.name, new VmError(vm.name, `${detail} (retrying in ${backoff < 1000 ? `${backoff} ms` : `${Math.round(backoff / 1000)} s`})`, { cause: err }), 'open');
          await waitBackoff();
          continue;
        }
      }
      try {
        const s: NamedSample = await session.sample({ consistent });
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
        const r = await session.recover(err);
        if (r === 'reset') {
          // new page tables, new KASLR slide: attach again at once
          h.onNote?.(vm.name, 'guest was reset; re-attaching');
          continue;
        }
        if (r === 'gone') {
          if (o.endWhenGone) {
            res.fatal = err;
            return res;
          }
          h.onNote?.(vm.name, 'detached; retrying');
          await waitBackoff();
          continue;
        }
        // anything else (QMP error, backend failure): attach again
        if (r === 'detached') continue;
      }
      if (once) break;
      next += vm.intervalMs;
      const wait = next - performance.now();
      if (wait > 0) await abortableSleep(wait, o.signal);
      else next = performance.now(); // late: do not burst to catch up
    }
    return res;
  } finally {
    await session.close();
    await names?.settle();
  }
}

/** Run every VM's loop concurrently; resolves when all have ended (abort, count, or fatal). */
export async function runVms(vms: MonitoredVm[], h: LoopHandlers, o: LoopOptions = {}): Promise<VmResult[]> {
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
