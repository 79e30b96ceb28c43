// Builds recorded-style metric series (cumulative counters, real timestamps) from utilisation scripts,
// so a test can say "container b at 38 % of the VM's 2 vCPUs, 1.5 s after the last sample".

import type { ContainerSample, Sample } from '../../vmi/sample.ts';
import type { VmStats } from '../../controller/types.ts';
import { containerSample } from '../fixtures/sample.ts';

export const T0 = Date.parse('2026-11-22T09:00:00.000Z');
export const GiB = 1024 ** 3;

export class VmSeries {
  private cpuNs = 0;
  private lastMs: number | undefined;
  private rd = 0;
  private wr = 0;
  private rx = 0;
  private tx = 0;
  constructor(
    readonly vm: string,
    readonly vcpus: number,
    readonly memTotal = 4 * GiB,
  ) {}

  /** A reading at T0 + ms where the VM used `util` of its vCPUs since the previous reading. */
  at(ms: number, util: number, o: { memUsed?: number; diskBps?: number; netBps?: number } = {}): VmStats {
    const t = T0 + ms;
    if (this.lastMs !== undefined) {
      const dt = (t - this.lastMs) / 1000;
      this.cpuNs += Math.round(util * dt * this.vcpus * 1e9);
      this.rd += Math.round((o.diskBps ?? 0) * dt);
      this.rx += Math.round((o.netBps ?? 0) * dt);
    }
    this.lastMs = t;
    return {
      time: new Date(t).toISOString(),
      vm: this.vm,
      vcpus: this.vcpus,
      cpu_time_ns: this.cpuNs,
      memory_used_bytes: o.memUsed ?? GiB,
      memory_total_bytes: this.memTotal,
      block_rd_bytes: this.rd,
      block_wr_bytes: this.wr,
      net_rx_bytes: this.rx,
      net_tx_bytes: this.tx,
    };
  }
}

export class ContainerSeries {
  private readonly cpu = new Map<string, number>();
  private lastMs: number | undefined;
  constructor(
    readonly vm: string,
    readonly vcpus: number,
  ) {}

  /** utils: container name -> CPU utilisation (fraction of the VM's vCPUs) since the previous sample */
  at(ms: number, utils: Record<string, number>, mem: Record<string, number> = {}): Sample {
    const t = T0 + ms;
    const dt = this.lastMs === undefined ? 0 : (t - this.lastMs) / 1000;
    this.lastMs = t;
    const containers: ContainerSample[] = Object.entries(utils).map(([name, u]) => {
      const ns = (this.cpu.get(name) ?? 1e12) + Math.round(u * dt * this.vcpus * 1e9);
      this.cpu.set(name, ns);
      return containerSample(`${name}`.padEnd(12, '0'), {
        cgroup: `/docker/${name}`,
        name,
        cpu_usage_ns: ns,
        memory_usage_bytes: mem[name] ?? 100 * 1024 * 1024,
      });
    });
    return { time: new Date(t).toISOString(), kernel: '6.1.0-56-amd64', sample_us: 300, vm: this.vm, containers };
  }
}

/** A settable clock for the engine. */
export class FakeClock {
  constructor(public ms = T0) {}
  readonly now = (): number => this.ms;
  set(offsetMs: number): void {
    this.ms = T0 + offsetMs;
  }
}
