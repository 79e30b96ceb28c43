// The VM-level reading of two-level monitoring: what the controller's policy compares with a VM's
// capacity before it looks inside the VM. Read by vmstats/libvirt-domstats.ts (libvirt domains) and
// vmstats/qemu-vm-stats.ts (QEMU processes from /proc and QMP).

/**
 * VM-level statistics as libvirt's `virsh domstats` (or /proc/<qemu pid> for QEMU-direct) reports them.
 * Counters are cumulative; `time` is when they were read. Rates are computed from deltas over the real
 * elapsed time between two readings.
 */
export interface VmStats {
  /** ISO-8601 wall time of the reading */
  time: string;
  /** domain name */
  vm: string;
  /** number of vCPUs (capacity for CPU utilisation) */
  vcpus: number;
  /** cumulative CPU time of all vCPUs, ns (domstats cpu.time) */
  cpu_time_ns: number;
  /** memory in use by the guest, bytes (balloon available-unused, else rss, else current) */
  memory_used_bytes: number;
  /** memory assigned to the guest, bytes (balloon.current / maximum) */
  memory_total_bytes: number;
  /** cumulative bytes read from / written to all virtual disks */
  block_rd_bytes: number;
  block_wr_bytes: number;
  /** cumulative bytes received / transmitted on all virtual NICs */
  net_rx_bytes: number;
  net_tx_bytes: number;
}
