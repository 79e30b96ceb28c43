// The shape of one monitoring sample, as `ciel monitor --json` prints it (one JSON line per sample).
// Counters are cumulative, exactly as the guest's own cgroupfs/procfs files report them.

export interface ContainerSample {
  /** 64-hex Docker id, or the cgroup's name when it is not a Docker container */
  id: string;
  /** cgroup path as the guest sees it, e.g. /docker/<id> or /system.slice/docker-<id>.scope */
  cgroup: string;
  /** friendly name (from the guest's disk, when known) */
  name?: string;
  cpu_usage_ns: number;
  memory_usage_bytes: number;
  memory_rss_bytes: number;
  memory_cache_bytes: number;
  /**
   * v2 memory.stat inactive_file / v1 memory.stat total_inactive_file (both hierarchical), in bytes;
   * cAdvisor's container_memory_working_set_bytes = memory_usage_bytes - this (floored at 0).
   * Absent when the monitor build predates it (ABI < 2) or the container has no memory controller.
   */
  memory_inactive_file_bytes?: number;
  io_read_bytes: number;
  io_write_bytes: number;
  net_rx_bytes: number;
  net_tx_bytes: number;
  pids: number;
}

export interface Sample {
  /** ISO-8601 wall time at which the sample was taken */
  time: string;
  /** guest kernel release, e.g. 6.1.0-56-amd64 */
  kernel: string;
  /** wall time the sample took, in microseconds */
  sample_us: number;
  /** VM name (multi-VM monitoring) */
  vm?: string;
  /** pause time in microseconds when sampled with --consistent */
  pause_us?: number;
  containers: ContainerSample[];
  /**
   * Present when the monitor stopped a walk early (CIEL_HDR_TRUNC_*): 'limit' = more cgroups visited
   * than the per-call maximum (a cyclic list in a hostile guest, or a huge tree), 'out' = out buffer full,
   * 'cpus' / 'nodes' = more possible CPUs / NUMA nodes than the monitor sums over, 'depth' = a subtree
   * deeper than the maximum, 'list' = an inner list (csets, blkgs, devices) hit its bound. The numbers
   * are then incomplete: count the sample as an error.
   */
  truncated?: ('out' | 'limit' | 'cpus' | 'depth' | 'nodes' | 'list')[];
}
