// The VM-level CPU clock of a process (vmstats/qemu-proc-stats.ts), on this very process: a worker thread
// burns CPU and exits; its time must stay counted after it is gone (QEMU's worker pool comes and goes),
// and the nanosecond sum must agree with the kernel's own tick-granular utime+stime.

import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { QemuProcStats } from '../../vmstats/qemu-proc-stats.ts';

/** utime+stime of this process in ns (10 ms ticks; includes exited threads) */
function statNs(): number {
  const s = readFileSync('/proc/self/stat', 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1e9) / 100;
}

describe('QemuProcStats', () => {
  it('counts every thread in ns and keeps the time of threads that exited', async () => {
    const p = new QemuProcStats(process.pid);
    const s0 = statNs();
    const c0 = p.cpuTimeNs();
    // a thread that spins ~400 ms of wall time, reporting before it exits
    const w = new Worker('const t = Date.now(); let x = 0; while (Date.now() - t < 400) x++; require("worker_threads").parentPort.postMessage(x);', { eval: true });
    await new Promise((res) => w.once('message', res));
    const before = p.cpuTimeNs(); // the worker is still alive (or just finishing)
    await new Promise((res) => w.once('exit', res));
    const after = p.cpuTimeNs();
    const s1 = statNs();
    expect(after).toBeGreaterThanOrEqual(before);
    // the spinning thread alone was on a CPU for most of its 400 ms (2 cores, shared)
    expect(after - c0).toBeGreaterThan(150e6);
    // agrees with the kernel's process total within its tick granularity and thread start/exit slack
    expect(Math.abs(after - c0 - (s1 - s0))).toBeLessThan(60e6);
    const r = p.read();
    expect(r.cpu_time_ns).toBeGreaterThanOrEqual(after);
    expect(r.rss_bytes).toBeGreaterThan(1 << 20);
  });

  it('fails clearly for a process that does not exist', () => {
    expect(() => new QemuProcStats(0x7ffffff0).read()).toThrow(/ENOENT/);
  });
});
