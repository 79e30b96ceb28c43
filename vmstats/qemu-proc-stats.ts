// VM-level stats of a QEMU process from /proc, the cheap level of two-level monitoring for VMs that no
// libvirtd watches. Shared by the Autoscaler's ProcVmStats (controller/proc-vm-stats.ts) and the
// QEMU-direct provisioner's vmStats.
//
// CPU time comes from each thread's /proc/<pid>/task/<tid>/schedstat (nanoseconds on the CPU), not from
// /proc/<pid>/stat's utime+stime: those are in 10 ms clock ticks, which is ±10 % of a vCPU over a 100 ms
// window (the 10 Hz interval) and delays or fakes a threshold crossing. Threads that exit (QEMU's worker
// pool comes and goes) keep their last reading in `exited`, so the sum never goes backwards.

import { readdirSync, readFileSync } from 'node:fs';

export interface QemuProcReading {
  /** CPU time of all the process's threads so far, ns */
  cpu_time_ns: number;
  rss_bytes: number;
  /** bytes QEMU read/wrote through the host's block layer (page-cache hits are not counted) */
  read_bytes: number;
  write_bytes: number;
}

export class QemuProcStats {
  private readonly threads = new Map<number, number>();
  private exited = 0;

  constructor(readonly pid: number) {}

  /** CPU time of the whole process (every thread, live or exited since the first call), ns. */
  cpuTimeNs(): number {
    const seen = new Set<number>();
    let live = 0;
    for (const name of readdirSync(`/proc/${this.pid}/task`)) {
      const tid = Number(name);
      let ns: number;
      try {
        ns = Number(readFileSync(`/proc/${this.pid}/task/${name}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        continue; // the thread exited between readdir and read: its time is in `threads` already
      }
      if (!Number.isFinite(ns)) continue;
      seen.add(tid);
      this.threads.set(tid, ns);
      live += ns;
    }
    for (const [tid, ns] of this.threads) {
      if (!seen.has(tid)) {
        this.exited += ns;
        this.threads.delete(tid);
      }
    }
    return this.exited + live;
  }

  read(): QemuProcReading {
    const cpu_time_ns = this.cpuTimeNs();
    const status = readFileSync(`/proc/${this.pid}/status`, 'utf8');
    const rssKiB = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0);
    let read_bytes = 0;
    let write_bytes = 0;
    try {
      const io = readFileSync(`/proc/${this.pid}/io`, 'utf8');
      read_bytes = Number(/^read_bytes:\s+(\d+)/m.exec(io)?.[1] ?? 0);
      write_bytes = Number(/^write_bytes:\s+(\d+)/m.exec(io)?.[1] ?? 0);
    } catch {
      /* /proc/<pid>/io needs ptrace access; root has it */
    }
    return { cpu_time_ns, rss_bytes: rssKiB * 1024, read_bytes, write_bytes };
  }
}
