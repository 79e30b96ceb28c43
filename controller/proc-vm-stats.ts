// VM-level stats (the cheap level of two-level monitoring) for QEMU processes started directly (not
// by a provisioner): CPU time, RSS and host-side I/O bytes from /proc/<qemu pid>. Other VMs are
// answered by a fallback (a provisioner's or libvirt's vmStats).

import { VmError } from '../common/errors.ts';
import type { Provisioner } from '../provisioners/provisioner.ts';
import { QemuProcStats } from '../vmstats/qemu-proc-stats.ts';
import type { VmStatsSource } from './autoscaler.ts';
import type { VmStats } from './types.ts';

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
