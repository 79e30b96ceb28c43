// VM-level stats of a running QEMU process that no libvirtd watches (the QEMU-direct provisioner's VMs):
// CPU time and RSS of the whole process from /proc (qemu-proc-stats.ts; as libvirt's cpu.time counts the
// VM's cgroup), the guest's disk bytes from QMP `query-blockstats` (what the guest's disks moved, page
// cache hits included), NIC bytes from whoever can see the NIC (QMP has no NIC counters).

import type { QemuProcStats } from './qemu-proc-stats.ts';
import type { VmStats } from './vm-stats.ts';

export interface QemuVmTarget {
  /** the VM's name (VmStats.vm) */
  name: string;
  vcpus: number;
  memMiB: number;
  /** per-thread CPU clock of the VM's QEMU process, kept between readings */
  proc: QemuProcStats;
  /** the VM's QMP connection, when open (structural: anything that answers `query-blockstats`) */
  qmp?: { execute<T>(command: string): Promise<T>; readonly closed: boolean };
  /** NIC counters from the guest's point of view; absent: 0 */
  netStats?: () => Promise<{ rx_bytes: number; tx_bytes: number }>;
}

export async function readQemuVmStats(t: QemuVmTarget): Promise<VmStats> {
  const time = new Date().toISOString();
  const p = t.proc.read();
  let rd = 0;
  let wr = 0;
  if (t.qmp && !t.qmp.closed) {
    const bs = await t.qmp.execute<{ stats: { rd_bytes: number; wr_bytes: number } }[]>('query-blockstats');
    for (const b of bs) {
      rd += b.stats.rd_bytes;
      wr += b.stats.wr_bytes;
    }
  }
  const net = t.netStats ? await t.netStats() : { rx_bytes: 0, tx_bytes: 0 };
  return {
    time,
    vm: t.name,
    vcpus: t.vcpus,
    cpu_time_ns: p.cpu_time_ns,
    memory_used_bytes: p.rss_bytes,
    memory_total_bytes: t.memMiB * 1024 * 1024,
    block_rd_bytes: rd,
    block_wr_bytes: wr,
    net_rx_bytes: net.rx_bytes,
    net_tx_bytes: net.tx_bytes,
  };
}
