// The live monitor through a guest's life: frozen by someone else, rebooted by itself (new page tables,
// new KASLR slide), and gone. The sampling loop must keep going, re-attach, and end cleanly with a clear
// error. (QEMU's QMP socket serves one client, the monitor's, so the test drives the guest otherwise.)
import { afterAll, beforeAll, expect, it } from 'vitest';
import { buildMonitor } from '../../../compiler/build.ts';
import { GuestStateError } from '../../../vmi/backends/qemu-live.ts';
import { runVm } from '../../../monitor/loop.ts';
import type { Sample } from '../../../vmi/sample.ts';
import { bootGuest, type Guest } from '../../../testbed/guest/boot.ts';

const RELEASE = '6.1.0-56-amd64';
let guest: Guest;

beforeAll(async () => {
  await buildMonitor({ release: RELEASE });
  guest = await bootGuest({ name: `lifecycle-${process.pid}`, reboot: true });
}, 600_000);

afterAll(async () => {
  await guest?.stop();
});

const until = async (cond: () => boolean, ms: number) => {
  const t0 = Date.now();
  while (!cond() && Date.now() - t0 < ms) await new Promise((r) => setTimeout(r, 100));
  return cond();
};

it('keeps sampling while the guest is paused by someone else, re-attaches after a reset, and stops clearly when QEMU exits', async () => {
  const samples: Sample[] = [];
  const errors: Error[] = [];
  const notes: string[] = [];
  const ac = new AbortController();
  const loop = runVm(
    { name: 'life', backend: 'qemu', qmp: guest.qmpSocket, memory: guest.memFile, kernel: RELEASE, intervalMs: 100 },
    { onSample: (s) => samples.push(s as Sample), onError: (_vm, e) => errors.push(e), onNote: (_vm, m) => notes.push(m) },
    { signal: ac.signal, retryMinMs: 200, retryMaxMs: 1000 },
  );

  expect(await until(() => samples.length >= 3, 30_000)).toBe(true);
  const burner = (s: Sample) => s.containers.find((c) => c.cgroup.startsWith('/docker/c0950a75'))?.cpu_usage_ns ?? -1;

  // frozen from outside (the whole QEMU process stopped): samples go on, reading the same every time
  process.kill(guest.pid, 'SIGSTOP');
  const n0 = samples.length;
  const kept = await until(() => samples.length >= n0 + 4, 10_000);
  process.kill(guest.pid, 'SIGCONT');
  expect(kept).toBe(true);
  const frozen = samples.slice(n0 + 1, n0 + 4).map(burner);
  expect(new Set(frozen).size).toBe(1);

  // reset: the guest reboots (new CR3, new KASLR slide, counters from zero); the loop re-attaches
  const before = burner(samples[samples.length - 1]);
  expect(before).toBeGreaterThan(0);
  const n1 = samples.length;
  void guest.sh('reboot -f', 5_000).catch(() => {}); // a guest-initiated reset: QEMU reports RESET
  const back = await until(() => samples.length > n1 && samples.slice(n1).some((s) => s.containers.length === 6 && burner(s) < before), 180_000);
  expect(back, `errors: ${errors.map((e) => e.message).join(' | ')}`).toBe(true);
  expect(notes.some((m) => /guest was reset; re-attaching/.test(m)), notes.join(' | ')).toBe(true);

  // QEMU exits: the VM is reported gone with a clear error and retried (the daemon keeps other VMs
  // going), never a crash or a hang; stopping the daemon then ends the loop promptly
  const e0 = errors.length;
  process.kill(guest.pid, 'SIGTERM');
  expect(await until(() => errors.slice(e0).some((e) => e instanceof GuestStateError || /cannot attach/.test(e.message)), 30_000)).toBe(true);
  const gone = errors.slice(e0).find((e) => e instanceof GuestStateError || /cannot attach/.test(e.message))!;
  expect(gone.message).toMatch(/gone|exited|closed|not running|QEMU|QMP|ENOENT|ECONNREFUSED|missing/i);
  ac.abort();
  const end = await Promise.race([loop, new Promise((r) => setTimeout(() => r('hang'), 10_000))]);
  expect(end).not.toBe('hang');
}, 400_000);
