// The sampling loop behind `ciel monitor`: one sample per interval (drift-free), optionally with the
// vCPUs paused around it, surviving bad samples (hostile or changing guest memory) and guest resets.
import { QemuLiveBackend, GuestStateError } from './backends/qemu-live.ts';
import { CielError, GuestFaultError } from './errors.ts';
import { GuestMonitor } from './guest-monitor.ts';
import type { Sample } from './sample.ts';

export interface QemuTarget {
  qmpSocket: string;
  memFile: string;
  release: string;
  vm?: string;
}

export interface LoopOptions {
  intervalMs: number;
  /** stop after this many samples (default: run until aborted) */
  count?: number;
  /** pause the vCPUs around each sample (QMP stop/cont) and report the pause time */
  consistent?: boolean;
  onSample(s: Sample): void;
  /** a sample that failed; the loop goes on */
  onError(e: Error): void;
  signal?: AbortSignal;
}

/** "1s", "250ms", "0.5s", "2m", or a bare number of seconds. */
export function parseInterval(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text.trim());
  if (!m) throw new CielError(`bad interval '${text}' (examples: 1s, 250ms, 0.1s)`);
  const n = Number(m[1]) * (m[2] === 'ms' ? 1 : m[2] === 'm' ? 60_000 : 1000);
  if (n < 1) throw new CielError(`interval '${text}' is shorter than 1 ms`);
  return n;
}

export async function openQemuMonitor(t: QemuTarget): Promise<{ backend: QemuLiveBackend; monitor: GuestMonitor }> {
  const backend = await QemuLiveBackend.open({ memFile: t.memFile, qmpSocket: t.qmpSocket, vm: t.vm });
  try {
    return { backend, monitor: await GuestMonitor.open({ release: t.release, backend, vm: t.vm }) };
  } catch (e) {
    await backend.close();
    throw e;
  }
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
  });

export async function runQemuLoop(t: QemuTarget, o: LoopOptions): Promise<number> {
  let { backend, monitor } = await openQemuMonitor(t);
  let taken = 0;
  let next = performance.now();
  try {
    while (!o.signal?.aborted && (o.count === undefined || taken < o.count)) {
      try {
        let pauseUs: number | undefined;
        if (o.consistent) {
          const t0 = performance.now();
          await backend.pause();
          try {
            const s = monitor.sample();
            await backend.resume();
            pauseUs = Math.round((performance.now() - t0) * 1000);
            s.pause_us = pauseUs;
            o.onSample(s);
          } catch (e) {
            await backend.resume().catch(() => {});
            throw e;
          }
        } else {
          o.onSample(monitor.sample());
        }
        taken++;
      } catch (e) {
        if (e instanceof GuestStateError && e.status === 'reset') {
          // The guest rebooted: new page tables, new KASLR slide. Reopen and go on.
          o.onError(new CielError(`${t.vm ?? t.qmpSocket}: guest was reset; re-attaching`));
          await backend.close();
          monitor.close();
          ({ backend, monitor } = await reopenWhenReady(t, o.signal));
        } else if (e instanceof GuestStateError) {
          throw e; // QEMU is gone or the guest stopped for good
        } else if (e instanceof GuestFaultError) {
          o.onError(e); // bad or changing guest memory: this sample only
          // a fault right after a reboot in place (no RESET seen) also means new page tables
          await monitor.refresh().catch(() => {});
        } else {
          throw e;
        }
      }
      next += o.intervalMs;
      const wait = next - performance.now();
      if (wait > 0) await sleep(wait, o.signal);
      else next = performance.now(); // we are late: do not burst to catch up
    }
    return taken;
  } finally {
    monitor.close();
    await backend.close();
  }
}

/** After a reset the kernel needs a moment before its page tables and cgroups exist again. */
async function reopenWhenReady(t: QemuTarget, signal?: AbortSignal) {
  let last: unknown;
  for (let i = 0; i < 120 && !signal?.aborted; i++) {
    try {
      return await openQemuMonitor(t);
    } catch (e) {
      if (e instanceof GuestStateError && e.status !== 'reset') throw e;
      last = e;
      await sleep(500, signal);
    }
  }
  throw new CielError(`${t.vm ?? t.qmpSocket}: guest did not come back after reset (${(last as Error)?.message})`);
}
