// Attaching a monitor to a live QEMU guest, and the interval syntax. The sampling loop itself (several
// VMs, retries, guest resets) is monitor/loop.ts.
import { QemuLiveBackend } from './backends/qemu-live.ts';
import { CielError } from '../common/errors.ts';
import { GuestMonitor } from './guest-monitor.ts';

export interface QemuTarget {
  qmpSocket: string;
  memFile: string;
  release: string;
  vm?: string;
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
