// One VM's monitor: the per-kernel build (generated/<release>/) attached to a memory backend, with
// the kernel-symbol slots relocated by the KASLR slide. sample() reads every cgroup from outside and
// returns the containers (Docker layouts) as a Sample.
import { pathToFileURL } from 'node:url';
import { loadBuild, slotAddress, type BuildManifest, type SlotInfo } from '../common/build-artifact.ts';
import type { MemoryBackend } from './backends/backend.ts';
import { CielError } from '../common/errors.ts';
import { findSlideFromPageTables, findVmcoreinfo } from './kaslr.ts';
import { NativeRuntime, type CallStats } from './native-runtime.ts';
import type { ContainerSample, Sample } from './sample.ts';

/** What the generated abi.ts exports (compiler/bindings.ts). */
interface AbiModule {
  CIEL_ABI: Record<string, number>;
  CIEL_MON_HDR_SIZE: number;
  CIEL_CGROUP_REC_SIZE: number;
  decodeCielMonHdr(b: Buffer, off?: number): { nr_records: number; nr_seen: number; flags: number; cgroup_mode: number; rec_size: number; hdr_size: number; magic: number };
  decodeCielCgroupRec(b: Buffer, off?: number): CgroupRecord;
  /** byte offset of every field (builds since the field-offset tables) */
  CIEL_CGROUP_REC_OFFSETS?: Record<'cpu_usage_ns' | 'memory_usage_bytes' | 'memory_rss_bytes' | 'memory_cache_bytes' | 'io_read_bytes' | 'io_write_bytes' | 'net_rx_bytes' | 'net_tx_bytes' | 'pids' | 'flags', number> & { memory_inactive_file_pages?: number };
}

export interface CgroupRecord {
  cpu_usage_ns: bigint;
  memory_usage_bytes: bigint;
  memory_rss_bytes: bigint;
  memory_cache_bytes: bigint;
  /** ABI >= 2: v2 memory.stat inactive_file / v1 total_inactive_file, in 4 KiB pages (saturating u32) */
  memory_inactive_file_pages?: number;
  io_read_bytes: bigint;
  io_write_bytes: bigint;
  net_rx_bytes: bigint;
  net_tx_bytes: bigint;
  net_rx_packets: bigint;
  net_tx_packets: bigint;
  pids: number;
  nr_tasks: number;
  cgroup_id: bigint;
  /** guest address of the task_struct the net lookup used (0 if none) */
  first_task: bigint;
  level: number;
  flags: number;
  hierarchy_id: number;
  path: string;
}

const DOCKER_ID = /(?:^|\/)docker[-/]([0-9a-f]{64})(?:\.scope)?$/;
const MAX_RECORDS = 4096;

/** The Docker container id of a cgroup path (cgroupfs driver /docker/<id>, systemd docker-<id>.scope). */
export function dockerIdOf(path: string): string | null {
  return DOCKER_ID.exec(path)?.[1] ?? null;
}

export interface MonitorOptions {
  release: string;
  backend: MemoryBackend;
  vm?: string;
  outRoot?: string;
}

export class GuestMonitor {
  private readonly buf: Buffer;
  /** CIEL_ARG_CONTAINERS_ONLY as the monitor's input, or null for a build that predates it */
  private readonly containersOnlyArgs: Buffer | null;
  lastStats: CallStats | null = null;
  slide = 0n;

  private constructor(
    readonly release: string,
    readonly backend: MemoryBackend,
    readonly rt: NativeRuntime,
    readonly abi: AbiModule,
    readonly slots: SlotInfo[],
    readonly manifest: BuildManifest,
    readonly vm: string | undefined,
  ) {
    this.buf = Buffer.alloc(abi.CIEL_MON_HDR_SIZE + MAX_RECORDS * abi.CIEL_CGROUP_REC_SIZE);
    const only = abi.CIEL_ABI.CIEL_ARG_CONTAINERS_ONLY;
    // struct ciel_mon_args: max_cgroups, max_depth, flags (u32 at 8); zeros elsewhere are the defaults
    this.containersOnlyArgs = only === undefined ? null : Buffer.alloc(32);
    this.containersOnlyArgs?.writeUInt32LE(only!, 8);
  }

  static async open(o: MonitorOptions): Promise<GuestMonitor> {
    const build = loadBuild(o.release, o.outRoot);
    const abi = (await import(pathToFileURL(build.abiModule).href)) as AbiModule;
    const rt = new NativeRuntime(build.so);
    const m = new GuestMonitor(o.release, o.backend, rt, abi, build.slots, build.manifest, o.vm);
    await m.refresh();
    return m;
  }

  /** (Re)read CR3/CR4 and the KASLR slide, and fill the slots: after attach, and after a guest reboot. */
  async refresh(): Promise<void> {
    const regs = await this.backend.registers();
    this.rt.attach(this.backend, regs);
    const text = BigInt(this.manifest.kernelText);
    const found = findSlideFromPageTables((va) => this.rt.translate(va), text);
    if (found) {
      this.slide = found.slide;
    } else {
      const info = findVmcoreinfo(this.backend);
      if (!info) throw new CielError(`${this.backend.kind}: cannot find the KASLR slide (no kernel-image mapping from CR3, no VMCOREINFO)`);
      this.slide = info.kernelOffset;
    }
    this.rt.writeU64s(
      '__ciel_slots',
      this.slots.map((s) => slotAddress(s, this.manifest, this.slide)),
    );
  }

  /** Run one monitor entry point into this.buf; the header it wrote. */
  private run(entry: 'ciel_mon_cgroup_v2' | 'ciel_mon_cgroup_v1', containersOnly: boolean): { hdr: ReturnType<AbiModule['decodeCielMonHdr']>; stats: CallStats } {
    this.buf.fill(0, 0, this.abi.CIEL_MON_HDR_SIZE);
    const { result, stats } = this.rt.call(entry, this.buf, containersOnly ? this.containersOnlyArgs : null);
    this.lastStats = stats;
    if (result < 0) throw new CielError(`${entry} returned ${result}`);
    return { hdr: this.abi.decodeCielMonHdr(this.buf), stats };
  }

  /** The cgroup path of the record at `off`: its last member (ciel_abi.h), NUL-terminated. */
  private recordPath(off: number): string {
    const pathMax = this.abi.CIEL_ABI.CIEL_PATH_MAX!;
    const start = off + this.abi.CIEL_CGROUP_REC_SIZE - pathMax;
    const nul = this.buf.indexOf(0, start);
    return this.buf.toString('latin1', start, nul < 0 || nul > start + pathMax ? start + pathMax : nul);
  }

  /**
   * Run one monitor entry point and decode its records: every cgroup, or with `containersOnly` only
   * Docker's containers (the monitor then reads statistics only for them and the root, and the other
   * records are not decoded).
   */
  readCgroups(
    entry: 'ciel_mon_cgroup_v2' | 'ciel_mon_cgroup_v1',
    opts: { containersOnly?: boolean } = {},
  ): { mode: number; records: CgroupRecord[]; stats: CallStats; hdrFlags: number } {
    const { hdr, stats } = this.run(entry, opts.containersOnly ?? false);
    const records: CgroupRecord[] = [];
    for (let i = 0; i < hdr.nr_records; i++) {
      const off = hdr.hdr_size + i * hdr.rec_size;
      if (opts.containersOnly && !DOCKER_ID.test(this.recordPath(off))) continue;
      records.push(this.abi.decodeCielCgroupRec(this.buf, off));
    }
    return { mode: hdr.cgroup_mode, records, stats, hdrFlags: hdr.flags };
  }

  /**
   * The containers of the records in this.buf, read straight from the fields a sample reports (no
   * record objects, no BigInt: decoding whole records cost more than the monitor's own walk). u64
   * counters become numbers the way Number(bigint) does: lo + hi * 2^32 is rounded once.
   */
  private containersInBuffer(hdr: { nr_records: number; hdr_size: number; rec_size: number }, o: NonNullable<AbiModule['CIEL_CGROUP_REC_OFFSETS']>): ContainerSample[] {
    const b = this.buf;
    const MEM = this.abi.CIEL_ABI.CIEL_REC_MEM!;
    const u64 = (at: number) => b.readUInt32LE(at) + b.readUInt32LE(at + 4) * 4294967296;
    const containers: ContainerSample[] = [];
    for (let i = 0; i < hdr.nr_records; i++) {
      const off = hdr.hdr_size + i * hdr.rec_size;
      const path = this.recordPath(off);
      const id = dockerIdOf(path);
      if (!id) continue;
      const flags = b.readUInt32LE(off + o.flags);
      containers.push({
        id,
        cgroup: path,
        cpu_usage_ns: u64(off + o.cpu_usage_ns),
        memory_usage_bytes: u64(off + o.memory_usage_bytes),
        memory_rss_bytes: u64(off + o.memory_rss_bytes),
        memory_cache_bytes: u64(off + o.memory_cache_bytes),
        ...(flags & MEM ? { memory_inactive_file_bytes: b.readUInt32LE(off + o.memory_inactive_file_pages!) * 4096 } : {}),
        io_read_bytes: u64(off + o.io_read_bytes),
        io_write_bytes: u64(off + o.io_write_bytes),
        net_rx_bytes: u64(off + o.net_rx_bytes),
        net_tx_bytes: u64(off + o.net_tx_bytes),
        pids: b.readUInt32LE(off + o.pids),
      });
    }
    return containers;
  }

  /** One sample of every container, as `ciel monitor --json` prints it. */
  sample(opts: { consistentPauseUs?: number } = {}): Sample {
    this.backend.checkAlive?.();
    const t0 = performance.now();
    const time = new Date().toISOString();
    const A = this.abi.CIEL_ABI;
    const v2 = this.run('ciel_mon_cgroup_v2', true);
    const mode = v2.hdr.cgroup_mode;
    let accesses = v2.stats.accesses;
    let misses = v2.stats.misses;
    let hdrFlags = v2.hdr.flags;
    let containers: ContainerSample[];
    const offsets = this.abi.CIEL_CGROUP_REC_OFFSETS;
    if (mode !== A.CIEL_CGMODE_LEGACY && mode !== A.CIEL_CGMODE_HYBRID && offsets?.memory_inactive_file_pages !== undefined) {
      containers = this.containersInBuffer(v2.hdr, offsets);
    } else {
      // v1 (one record per hierarchy, merged by path) and builds without field offsets: whole records
      const decode = (hdr: typeof v2.hdr) => {
        const recs: CgroupRecord[] = [];
        for (let i = 0; i < hdr.nr_records; i++) {
          const off = hdr.hdr_size + i * hdr.rec_size;
          if (DOCKER_ID.test(this.recordPath(off))) recs.push(this.abi.decodeCielCgroupRec(this.buf, off));
        }
        return recs;
      };
      let records = decode(v2.hdr);
      if (mode === A.CIEL_CGMODE_LEGACY || mode === A.CIEL_CGMODE_HYBRID) {
        const v2records = records;
        const v1 = this.run('ciel_mon_cgroup_v1', true);
        records = mergeV1(decode(v1.hdr), mode === A.CIEL_CGMODE_HYBRID ? v2records : [], A);
        accesses += v1.stats.accesses;
        misses += v1.stats.misses;
        hdrFlags |= v1.hdr.flags;
      }
      containers = records.map((r) => toContainerSample(r, A));
    }
    const sample: Sample = {
      time,
      kernel: this.release,
      sample_us: Math.round((performance.now() - t0) * 1000),
      containers,
    };
    if (this.vm) sample.vm = this.vm;
    if (opts.consistentPauseUs !== undefined) sample.pause_us = opts.consistentPauseUs;
    const truncated = truncationNames(hdrFlags, A);
    if (truncated.length) sample.truncated = truncated;
    Object.assign(sample, { tlb_hit_ratio: accesses ? 1 - misses / accesses : 1, guest_accesses: accesses });
    return sample;
  }

  close(): void {
    this.rt.close();
  }
}

/** One container's numbers from its decoded record (v1 merges, builds without field offsets). */
function toContainerSample(r: CgroupRecord, A: Record<string, number>): ContainerSample {
  return {
    id: dockerIdOf(r.path)!,
    cgroup: r.path,
    cpu_usage_ns: Number(r.cpu_usage_ns),
    memory_usage_bytes: Number(r.memory_usage_bytes),
    memory_rss_bytes: Number(r.memory_rss_bytes),
    memory_cache_bytes: Number(r.memory_cache_bytes),
    ...(r.memory_inactive_file_pages !== undefined && r.flags & A.CIEL_REC_MEM
      ? { memory_inactive_file_bytes: r.memory_inactive_file_pages * 4096 }
      : {}),
    io_read_bytes: Number(r.io_read_bytes),
    io_write_bytes: Number(r.io_write_bytes),
    net_rx_bytes: Number(r.net_rx_bytes),
    net_tx_bytes: Number(r.net_tx_bytes),
    pids: r.pids,
  };
}

const TRUNCATIONS: [string, string][] = [
  ['CIEL_HDR_TRUNC_OUT', 'out'],
  ['CIEL_HDR_TRUNC_LIMIT', 'limit'],
  ['CIEL_HDR_TRUNC_CPUS', 'cpus'],
  ['CIEL_HDR_TRUNC_DEPTH', 'depth'],
  ['CIEL_HDR_TRUNC_NODES', 'nodes'],
  ['CIEL_HDR_TRUNC_LIST', 'list'],
];

/** The CIEL_HDR_TRUNC_* bits of a monitor header as short names (a cyclic cgroup list shows up as 'limit'). */
export function truncationNames(flags: number, A: Record<string, number>): NonNullable<Sample['truncated']> {
  return TRUNCATIONS.filter(([k]) => A[k] !== undefined && flags & A[k]).map(([, n]) => n as NonNullable<Sample['truncated']>[number]);
}

/**
 * cgroup v1 gives one record per hierarchy (cpuacct, memory, blkio, ...) for the same path: merge
 * them by path, taking each number from the record whose flags say it is valid.
 */
function mergeV1(v1: CgroupRecord[], v2: CgroupRecord[], A: Record<string, number>): CgroupRecord[] {
  const byPath = new Map<string, CgroupRecord>();
  for (const r of [...v2, ...v1]) {
    const cur = byPath.get(r.path);
    if (!cur) {
      byPath.set(r.path, { ...r });
      continue;
    }
    if (r.flags & A.CIEL_REC_CPU) cur.cpu_usage_ns = r.cpu_usage_ns;
    if (r.flags & A.CIEL_REC_MEM) {
      cur.memory_usage_bytes = r.memory_usage_bytes;
      cur.memory_rss_bytes = r.memory_rss_bytes;
      cur.memory_cache_bytes = r.memory_cache_bytes;
      cur.memory_inactive_file_pages = r.memory_inactive_file_pages;
    }
    if (r.flags & A.CIEL_REC_IO) {
      cur.io_read_bytes = r.io_read_bytes;
      cur.io_write_bytes = r.io_write_bytes;
    }
    if (r.flags & A.CIEL_REC_PIDS) cur.pids = r.pids;
    if (r.flags & A.CIEL_REC_NET && !(cur.flags & A.CIEL_REC_NET)) {
      cur.net_rx_bytes = r.net_rx_bytes;
      cur.net_tx_bytes = r.net_tx_bytes;
    }
    cur.flags |= r.flags;
  }
  return [...byPath.values()];
}
