// Prometheus exposition of Ciel's samples, under cAdvisor's metric names, units and types, so that
// dashboards and alerts written for cAdvisor/kubelet work unchanged.
//
// The container series are written at scrape time from each VM's latest sample, counters as the
// guest's cumulative values, exactly as cAdvisor exports them: a guest
// reboot shows up as a counter reset, which PromQL's rate()/increase() already handle.
//
// Labels (cadvisor-labels.ts): id = the cgroup path as the guest sees it (what cAdvisor puts in `id`),
// name = the container name without Docker's leading '/', image = Config.Image when known, vm = Ciel's
// VM name, container_label_<key> for each Docker label; then per metric, as cAdvisor has them:
// cpu="total" on container_cpu_usage_seconds_total (the monitor sums over CPUs), interface on the
// network metrics, device on the filesystem ones. interface is "eth0": the monitor reads one device
// per container network namespace, args.ifname, which the runtime leaves at its default eth0 (the
// name Docker gives the container's end of its veth). device is "total": the monitor sums io.stat
// over all of the container's block devices (every blkg), it has no per-device numbers.
//
// container_last_seen is the time of the sample that last saw the container (cAdvisor: the scrape
// time, for containers that exist); it stops advancing when a VM's samples fail, which is what an
// alert on `time() - container_last_seen` wants to see.
// container_spec_* come from the container's hostconfig.json (disk/docker-config.ts: Docker's own
// defaults and conversions), not from the cgroup: the compiled monitor does not read cgroup limit
// files, and adding them would mean a new monitor ABI built for every kernel line. Docker writes
// hostconfig.json on create and on `docker update`; a limit written into cgroupfs by hand is not
// seen. Units are cAdvisor's: cpu period/quota in microseconds, shares on the v1 scale, bytes with
// 0 = unlimited; container_spec_cpu_quota only when there is a quota, as cAdvisor does.
//
// container_memory_working_set_bytes is defined as cAdvisor does: usage - inactive_file (0 when
// inactive_file > usage). The Sample has no inactive_file yet; when a container sample carries
// `memory_inactive_file_bytes` it is used, otherwise the working set is reported as usage (i.e.
// inactive_file taken as 0: an upper bound, never below cAdvisor's value).
//
// Any VmSession user feeds it the same way: the exporter is a SampleObserver (vmi/session.ts), so
// `ciel monitor`'s loop and the controller's MonitorSampler hand it their samples and failures alike
// (onSample: the sample, its TLB hit ratio, a truncated walk counted as an error; onError: an error).

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { dockerLabelSet, type LabelSet, seriesLine } from './cadvisor-labels.ts';
import type { ContainerSample, Sample } from '../vmi/sample.ts';
import type { ContainerInfo, ContainerLimits, SampleObserver, SessionSample } from '../vmi/session.ts';
import { UsageError } from '../common/errors.ts';
import { DEFAULT_HOST, DEFAULT_PORT } from './listen-address.ts';

export type { ContainerInfo };
export { DEFAULT_HOST, DEFAULT_PORT };

/** A container sample that may carry the inactive file pages (cgroup v2 memory.stat inactive_file, v1 total_inactive_file). */
export type ContainerSampleWithInactive = ContainerSample & { memory_inactive_file_bytes?: number };

export interface ExporterOptions {
  /** default 127.0.0.1 (loopback only: the numbers describe other people's VMs) */
  host?: string;
  /** default 9464; 0 picks a free port */
  port?: number;
  /** histogram buckets of ciel_sample_duration_seconds */
  durationBuckets?: number[];
}

interface VmState {
  sample: Sample;
  info: ReadonlyMap<string, ContainerInfo>;
}

/** cAdvisor's working set: usage minus inactive file pages, floored at 0. */
export function workingSetBytes(c: ContainerSampleWithInactive): number {
  const inactive = c.memory_inactive_file_bytes;
  if (inactive === undefined) return c.memory_usage_bytes;
  return inactive < c.memory_usage_bytes ? c.memory_usage_bytes - inactive : 0;
}

/** What a container series is computed from: its sample, what the disk says about it, the sample's time. */
interface SeriesSource {
  c: ContainerSampleWithInactive;
  info: ContainerInfo | undefined;
  /** Unix seconds of the sample */
  seen: number;
}

interface Family {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  /** labels after the container's own (cpu, interface, device) */
  extra?: LabelSet;
  /** undefined: no series for this container (unknown, or cAdvisor would not export it) */
  value: (s: SeriesSource) => number | undefined;
}

/** The device the monitor's network counters come from (kernel-src ciel_helpers.h: args.ifname "" = eth0). */
export const NET_INTERFACE = 'eth0';
/** The monitor's io counters are summed over every block device of the container. */
export const IO_DEVICE = 'total';

const limit = (k: keyof ContainerLimits) => (s: SeriesSource) => s.info?.limits?.[k];

/** cAdvisor's names, help texts, types and units (google/cadvisor metrics/prometheus.go). */
const FAMILIES: readonly Family[] = [
  { name: 'container_last_seen', help: 'Last time a container was seen by the exporter', type: 'gauge', value: (s) => s.seen },
  { name: 'container_cpu_usage_seconds_total', help: 'Cumulative cpu time consumed in seconds.', type: 'counter', extra: { cpu: 'total' }, value: (s) => s.c.cpu_usage_ns / 1e9 },
  { name: 'container_memory_usage_bytes', help: 'Current memory usage in bytes, including all memory regardless of when it was accessed', type: 'gauge', value: (s) => s.c.memory_usage_bytes },
  { name: 'container_memory_working_set_bytes', help: 'Current working set in bytes.', type: 'gauge', value: (s) => workingSetBytes(s.c) },
  { name: 'container_memory_rss', help: 'Size of RSS in bytes.', type: 'gauge', value: (s) => s.c.memory_rss_bytes },
  { name: 'container_memory_cache', help: 'Number of bytes of page cache memory.', type: 'gauge', value: (s) => s.c.memory_cache_bytes },
  { name: 'container_fs_reads_bytes_total', help: 'Cumulative count of bytes read', type: 'counter', extra: { device: IO_DEVICE }, value: (s) => s.c.io_read_bytes },
  { name: 'container_fs_writes_bytes_total', help: 'Cumulative count of bytes written', type: 'counter', extra: { device: IO_DEVICE }, value: (s) => s.c.io_write_bytes },
  { name: 'container_network_receive_bytes_total', help: 'Cumulative count of bytes received', type: 'counter', extra: { interface: NET_INTERFACE }, value: (s) => s.c.net_rx_bytes },
  { name: 'container_network_transmit_bytes_total', help: 'Cumulative count of bytes transmitted', type: 'counter', extra: { interface: NET_INTERFACE }, value: (s) => s.c.net_tx_bytes },
  { name: 'container_processes', help: 'Number of processes running inside the container.', type: 'gauge', value: (s) => s.c.pids },
  { name: 'container_spec_cpu_period', help: 'CPU period of the container.', type: 'gauge', value: limit('cpuPeriodUs') },
  { name: 'container_spec_cpu_quota', help: 'CPU quota of the container.', type: 'gauge', value: (s) => limit('cpuQuotaUs')(s) || undefined },
  { name: 'container_spec_cpu_shares', help: 'CPU share of the container.', type: 'gauge', value: limit('cpuShares') },
  { name: 'container_spec_memory_limit_bytes', help: 'Memory limit for the container.', type: 'gauge', value: limit('memoryBytes') },
  { name: 'container_spec_memory_swap_limit_bytes', help: 'Memory swap limit for the container.', type: 'gauge', value: limit('memorySwapBytes') },
  { name: 'container_spec_memory_reservation_limit_bytes', help: 'Memory reservation limit for the container.', type: 'gauge', value: limit('memoryReservationBytes') },
];

export class PrometheusExporter implements SampleObserver {
  readonly registry = new Registry();
  private readonly vms = new Map<string, VmState>();
  private server: Server | undefined;
  private readonly sampleDuration: Histogram<'vm'>;
  private readonly sampleErrors: Counter<'vm'>;
  private readonly tlbHitRatio: Gauge<'vm'>;

  constructor(private readonly opts: ExporterOptions = {}) {
    this.sampleDuration = new Histogram({
      name: 'ciel_sample_duration_seconds',
      help: 'Wall time one introspection sample of a VM took, in seconds.',
      labelNames: ['vm'],
      buckets: opts.durationBuckets ?? [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers: [this.registry],
    });
    this.sampleErrors = new Counter({
      name: 'ciel_sample_errors_total',
      help: 'Samples of a VM that ended with an error (guest fault, backend failure, ...).',
      labelNames: ['vm'],
      registers: [this.registry],
    });
    this.tlbHitRatio = new Gauge({
      name: 'ciel_tlb_hit_ratio',
      help: "Hit ratio of the guest-address translation cache during a VM's last sample (0..1).",
      labelNames: ['vm'],
      registers: [this.registry],
    });
  }

  /** Record the newest sample of a VM; `info` (by container id) supplies name/image known from the guest's disk. */
  observe(sample: Sample, info?: ReadonlyMap<string, ContainerInfo>): void {
    const vm = sample.vm ?? '';
    this.vms.set(vm, { sample, info: info ?? this.vms.get(vm)?.info ?? new Map() });
    if (Number.isFinite(sample.sample_us) && sample.sample_us >= 0) this.sampleDuration.observe({ vm }, sample.sample_us / 1e6);
  }

  /** A sample of `vm` failed. */
  recordError(vm: string): void {
    this.sampleErrors.inc({ vm });
  }

  /**
   * SampleObserver: a session user's sample. It is exported (observe), its TLB hit ratio set, and a
   * truncated walk (cyclic list, limits: incomplete numbers) counted as an error of its VM.
   */
  onSample(s: SessionSample, info?: ReadonlyMap<string, ContainerInfo>): void {
    if (s.truncated?.length) this.recordError(s.vm);
    this.observe(s, info);
    if (typeof s.tlb_hit_ratio === 'number' && Number.isFinite(s.tlb_hit_ratio)) this.setTlbHitRatio(s.vm, s.tlb_hit_ratio);
  }

  /** SampleObserver: an attach or a sample of `vm` failed. */
  onError(vm: string, _e: Error): void {
    this.recordError(vm);
  }

  /** Every VM's error counter at 0 from the start, so rate()/increase() see a VM's first error. */
  expectVms(vms: Iterable<string>): void {
    for (const vm of vms) this.sampleErrors.inc({ vm }, 0);
  }

  setTlbHitRatio(vm: string, ratio: number): void {
    this.tlbHitRatio.set({ vm }, ratio);
  }

  /** Stop exporting a VM's containers (VM removed or gone). */
  removeVm(vm: string): void {
    this.vms.delete(vm);
  }

  /** The exposition text, as /metrics serves it: the container families, then Ciel's own. */
  async metrics(): Promise<string> {
    return this.containerText() + '\n' + (await this.registry.metrics());
  }

  /** Text of the container families (label names vary with each container's Docker labels, which prom-client's fixed label names cannot carry). */
  private containerText(): string {
    const sources = [...this.sources()];
    const out: string[] = [];
    for (const f of FAMILIES) {
      out.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`);
      for (const [labels, s] of sources) {
        const v = f.value(s);
        if (v === undefined || !Number.isFinite(v) || v < 0) continue; // unknown, or garbage from a torn guest read: no series
        out.push(seriesLine(f.name, { ...labels, ...f.extra }, v));
      }
    }
    return out.join('\n') + '\n';
  }

  private *sources(): Generator<[LabelSet, SeriesSource]> {
    for (const [vm, st] of this.vms) {
      const t = Date.parse(st.sample.time);
      const seen = Number.isFinite(t) ? Math.floor(t / 1000) : NaN;
      // one series per cgroup: a hostile guest can list a cgroup twice, and Prometheus refuses duplicate samples
      const ids = new Set<string>();
      for (const c of st.sample.containers) {
        if (ids.has(c.cgroup)) continue;
        ids.add(c.cgroup);
        const info = st.info.get(c.id);
        const name = (info?.name ?? c.name ?? '').replace(/^\//, '');
        yield [{ id: c.cgroup, name, image: info?.image ?? '', vm, ...dockerLabelSet(info?.labels) }, { c, info, seen }];
      }
    }
  }

  /** Serve GET /metrics. Resolves with the address actually bound (port 0 -> the chosen port). */
  listen(): Promise<{ host: string; port: number; url: string; everyInterface: boolean }> {
    const host = this.opts.host ?? DEFAULT_HOST;
    const port = this.opts.port ?? DEFAULT_PORT;
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (path !== '/metrics') {
        res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found; metrics are at /metrics\n');
        return;
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { Allow: 'GET, HEAD' }).end();
        return;
      }
      this.metrics().then(
        (text) => {
          res.writeHead(200, { 'Content-Type': this.registry.contentType });
          res.end(req.method === 'HEAD' ? undefined : text);
        },
        (err: unknown) => {
          res.writeHead(500, { 'Content-Type': 'text/plain' }).end(`${String(err)}\n`);
        },
      );
    });
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => reject(listenError(host, port, e)));
      server.listen(port, host, () => {
        server.off('error', reject);
        const a = server.address() as AddressInfo;
        const h = a.family === 'IPv6' ? `[${a.address}]` : a.address;
        resolve({ host: a.address, port: a.port, url: `http://${h}:${a.port}/metrics`, everyInterface: isWildcardHost(a.address) });
      });
    });
  }

  close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return Promise.resolve();
    return new Promise((resolve, reject) => {
      s.close((err) => (err ? reject(err) : resolve()));
      s.closeAllConnections();
    });
  }
}

/** Why `--prometheus HOST:PORT` cannot be served, in the user's words (not a Node stack trace). */
export function listenError(host: string, port: number, e: NodeJS.ErrnoException): UsageError {
  const where = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  const why: Record<string, string> = {
    EADDRINUSE: 'the port is in use (another exporter, or a second ciel on it?)',
    EADDRNOTAVAIL: 'that address is not one of this machine\'s',
    EACCES: 'no permission to bind that port (ports below 1024 need root)',
    ENOTFOUND: 'unknown host name',
    EAI_AGAIN: 'the host name could not be resolved',
  };
  return new UsageError('--prometheus', `cannot serve metrics on ${where}: ${why[e.code ?? ''] ?? e.message}`);
}

/** Said after the URL when the exporter listens on every interface. */
export const EVERY_INTERFACE_WARNING =
  ' (WARNING: every interface: anyone who reaches this host can read the container names, images and usage; give 127.0.0.1:PORT to keep it local)';

/** True when HOST serves every interface: metrics (container names and usage) are then open to the network. */
export function isWildcardHost(host: string): boolean {
  return host === '0.0.0.0' || host === '::' || host === '[::]' || host === '';
}
