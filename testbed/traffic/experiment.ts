// The paper's autoscaling experiment (sec. 5.5, Fig. 12) with real traffic and nothing staged: an origin
// Docker guest (web, db, batch) and a load-balancer VM (IPVS, direct routing) on a private L2 segment; an
// open-loop HTTP client in the segment's namespace sends requests to the VIP at a rate the experiment
// steps up; each request costs CPU in the web container (the CGI's fixed work), so that CPU — read from
// outside by the compiled monitor — is caused by the requests alone. The real controller (Autoscaler:
// VM-level /proc stats of QEMU, the VMI sampler, the policy engine) finds web hot and starts a replica (a
// clone of the Docker template running only web, or a warm start from a saved web-only VM:
// docker-replicas.ts), which IPVS adds; a scale-in pauses or powers it off into the pool. Nothing here
// touches a container's load: the rate is the only knob.
import { rmSync } from 'node:fs';
import { cacheDir } from '../../common/cache.ts';
import { loadBuild } from '../../common/build-artifact.ts';
import { Autoscaler, type Backend } from '../../controller/autoscaler.ts';
import { MonitorSampler } from '../../controller/monitor-sampler.ts';
import { PolicyEngine } from '../../controller/policy.ts';
import { ProcVmStats } from '../../controller/proc-vm-stats.ts';
import type { TimedEvent } from '../../controller/scale-out-timeline.ts';
import { TrackingProvisioner } from '../../controller/tracking-provisioner.ts';
import type { ControllerEvent, PolicyConfig } from '../../controller/types.ts';
import type { ReleaseMode, Vm, VmSpec } from '../../provisioners/provisioner.ts';
import type { Sample } from '../../vmi/sample.ts';
import { cloneAndBoot, type DockerClone } from '../docker-guest/clone.ts';
import { directRoutingFiles } from '../docker-guest/direct-routing.ts';
import { cleanupSteps } from '../cleanup.ts';
import { EventLog } from '../event-log.ts';
import { IpvsVmBalancer } from '../lb/ipvs-vm.ts';
import { L2Segment } from '../lb/netns.ts';
import { DockerReplicaProvisioner, prepareWarmImage } from './docker-replicas.ts';
import { OpenLoopLoad, quantile, type RequestResult } from './open-loop.ts';
import { webAnswers } from './segment-probe.ts';

export const RELEASE = '6.1.0-56-amd64';
export const VIP = '10.77.0.100';
export const ORIGIN_IP = '10.77.0.19';
export const LB_CIDR = '10.77.0.10/24';
export const ORIGIN_VCPUS = 2;
export const ORIGIN_MEM_MIB = 1024;
/** the web-only VM a warm image is saved from (it is gone before the experiment starts) */
export const WARM_IMAGE_IP = '10.77.0.90';
/** CGI iterations per request: ~0.1-0.2 s of a TCG vCPU */
export const DEFAULT_WORK = 3000;

/**
 * CPU thresholds for the 2-vCPU TCG Docker origin on a shared 2-core host. VM level: QEMU's host CPU /
 * 2 vCPUs (the idle origin with web and db reads 0.05-0.1). Container level: guest CPU time / 2 vCPUs;
 * under TCG on a loaded host a request's guest CPU time stretches (the guest's clock runs while its
 * vCPU thread waits for a host core): measured web 0.3-0.5 vCPU at 1 req/s, 1-1.9 at 2 req/s
 * (work 3000, other engineers' guests on the host), but ~0.12 vCPU per req/s on a quiet host (0.24 at
 * 2 req/s, 0.4 at 4, 1.05-1.5 at 8). A container threshold of 0.3 (0.6 vCPU) is crossed at ~5 req/s on
 * a quiet host and at 1-2 on a loaded one; the ramp goes on until it is (it once took the 8 req/s step
 * with 0.4).
 */
export function trafficPolicy(o: { scaleDownWindowMs?: number; cooldownMs?: number } = {}): PolicyConfig {
  return {
    policies: [{ resource: 'cpu', vmThreshold: 0.3, containerThreshold: 0.3, target: 0.3, vmTarget: 0.3 }],
    scaleUpCooldownMs: o.cooldownMs ?? 60_000,
    scaleDownWindowMs: o.scaleDownWindowMs ?? 60_000,
    maxReplicas: 2,
  };
}

/**
 * The origin runs web and db. The template's third service, batch (an md5 of 8 MiB every 10 s), costs
 * ~1.2 vCPU for ~2 s under TCG: with no traffic at all it makes the VM hot every 10 s and, by the
 * policy's own rule, is the container to scale out — so the experiment's origin leaves it stopped
 * (restart policy "no", the same offline edit as a replica's) and the only load is the requests'.
 */
export const ORIGIN_SERVICES = ['web', 'db'];

/** Per container, from outside: CPU in vCPUs, memory bytes, network bytes/s. */
export interface ContainerPoint {
  cpu: number;
  mem: number;
  rx: number;
  tx: number;
}

export interface TrafficTick {
  /** seconds since the experiment started */
  t: number;
  at: number;
  /** VM name → container name → reading (rates over the real time between two samples) */
  vms: Record<string, Record<string, ContainerPoint>>;
  /** the client's rate setting */
  rate: number;
  /** requests answered (ok) / failed in the tick, by completion time */
  ok: number;
  failed: number;
  /** latency of the requests answered in the tick (ms) */
  p50?: number;
  p99?: number;
  /** the origin QEMU's host CPU in vCPUs (VM level) */
  originVm: number;
}

export interface TrafficOptions {
  tag?: string;
  policy?: PolicyConfig;
  /** controller interval; default 1000 ms (the paper's) */
  intervalMs?: number;
  /** CGI iterations per request; default DEFAULT_WORK */
  work?: number;
  tickMs?: number;
  /** how a new replica is made when the pool has none: a cold clone (default) or a warm start from an
   * image saved before the experiment (a web-only VM on the segment) */
  method?: 'clone' | 'warm';
  /** what a scale-in does with the replica: pause it (default) or power it off; either way it is pooled */
  releaseMode?: ReleaseMode;
  log?: (line: string) => void;
  onEvent?: (t: TimedEvent) => void;
  onTick?: (t: TrafficTick) => void;
  onRequest?: (r: RequestResult) => void;
}

export class TrafficExperiment {
  private readonly eventLog = new EventLog();
  readonly events: TimedEvent[] = this.eventLog.events;
  readonly ticks: TrafficTick[] = [];
  readonly t0 = Date.now();
  readonly tag: string;
  readonly originName: string;
  seg!: L2Segment;
  lb!: IpvsVmBalancer;
  origin!: DockerClone;
  load!: OpenLoopLoad;
  readonly sampler = new MonitorSampler();
  vmSource!: ProcVmStats;
  autoscaler!: Autoscaler;
  replicas!: DockerReplicaProvisioner;
  tracking!: TrackingProvisioner;
  /** Docker id → service name (the template's containers; a clone keeps them) */
  names: Record<string, string> = {};
  /** replica VM → epoch ms IPVS first showed a finished connection to it (its first answered request) */
  readonly firstServed = new Map<string, number>();
  /** replica VM → the QEMU PID its monitor session was attached to */
  private readonly attachedPid = new Map<string, number>();
  private readonly dir: string;
  private readonly ac = new AbortController();
  private loop?: Promise<void>;
  private tickTimer?: NodeJS.Timeout;
  private closed = false;
  private readonly log: (l: string) => void;

  private constructor(readonly o: TrafficOptions) {
    this.tag = o.tag ?? String(process.pid);
    this.originName = `origin-${this.tag}`;
    this.dir = cacheDir('traffic', `run-${this.tag}`);
    this.log = o.log ?? (() => {});
  }

  static async setup(o: TrafficOptions = {}): Promise<TrafficExperiment> {
    const x = new TrafficExperiment(o);
    try {
      await x.init();
    } catch (e) {
      await x.close();
      throw e;
    }
    return x;
  }

  since(at = Date.now()): number {
    return (at - this.t0) / 1000;
  }

  private async init(): Promise<void> {
    loadBuild(RELEASE);
    this.seg = new L2Segment({ ns: `ciel-tr-${this.tag}`.slice(0, 30), dir: this.dir });
    await this.seg.create();
    this.log(`private L2 segment: netns ${this.seg.ns}, bridge ${this.seg.hostCidr} (the client's side)`);
    const addressOfBackend = (b: Backend) => (b.vm === this.originName ? ORIGIN_IP : this.tracking.address(b.vm));
    this.lb = new IpvsVmBalancer({ segment: this.seg, cidr: LB_CIDR, vip: VIP, dir: this.dir, name: `ciel-lb-${this.tag}`.slice(0, 40), addressOf: addressOfBackend, drainTimeoutMs: 60_000 });
    this.log(`booting the load-balancer VM (IPVS, ${LB_CIDR}, VIP ${VIP}) in parallel`);
    const lbStart = this.lb.start();
    lbStart.catch(() => {});
    this.log(`origin: clone of the Docker template (${ORIGIN_SERVICES.join(', ')} started), ${ORIGIN_IP} + VIP on lo, ${ORIGIN_VCPUS} vCPUs, ${ORIGIN_MEM_MIB} MiB`);
    this.origin = await cloneAndBoot({
      name: this.originName,
      keep: ORIGIN_SERVICES,
      address: `${ORIGIN_IP}/24`,
      files: directRoutingFiles(`${ORIGIN_IP}/24`, VIP),
      memMiB: ORIGIN_MEM_MIB,
      network: { wrapper: this.seg.wrapper, nicArgs: this.seg.nicArgs({ name: this.originName } as Vm, '52:54:00:c1:e1:19') },
      log: this.log,
    });
    for (const [n, id] of Object.entries(this.origin.template.ids)) this.names[id] = n;
    const deadline = Date.now() + 420_000;
    while (!(await webAnswers(this.seg, ORIGIN_IP))) {
      if (!this.origin.guest.alive()) throw new Error('the origin VM exited before web answered');
      if (Date.now() > deadline) throw new Error(`web on the origin (${ORIGIN_IP}) did not answer within 420 s`);
      await new Promise((r) => setTimeout(r, 1000));
    }
    this.log(`origin web answers at ${ORIGIN_IP} (${this.since().toFixed(0)} s)`);
    await lbStart;
    await this.lb.addBackend('web', { vm: this.originName, container: 'web' });
    this.log(`IPVS: ${VIP}:80 → ${ORIGIN_IP}:80 (direct routing)`);
    await this.sampler.attach({ name: this.originName, backend: 'qemu', qmp: this.origin.guest.qmpSocket, memory: this.origin.guest.memFile, kernel: RELEASE }, { names: this.names });
    const warm = this.o.method === 'warm'
      ? {
          image: await prepareWarmImage({
            segment: this.seg, vip: VIP, name: `warmimg-${this.tag}`, address: `${WARM_IMAGE_IP}/24`, mac: '52:54:00:c1:e1:5a',
            memMiB: ORIGIN_MEM_MIB, smp: ORIGIN_VCPUS, dir: this.dir, log: this.log,
          }),
        }
      : undefined;
    this.replicas = new DockerReplicaProvisioner({ segment: this.seg, vip: VIP, tag: this.tag, warm, log: this.log });
    this.tracking = new TrackingProvisioner(this.replicas);
    this.vmSource = new ProcVmStats().add({ name: this.originName, pid: this.origin.guest.pid, vcpus: ORIGIN_VCPUS, memMiB: ORIGIN_MEM_MIB });
    this.autoscaler = new Autoscaler({
      vms: [this.originName],
      engine: new PolicyEngine(this.o.policy ?? trafficPolicy(), Date.now),
      vmSource: this.vmSource,
      sampler: this.sampler,
      provisioner: this.tracking,
      lb: this.lb,
      specFor: (c, name) => this.specFor(c, name),
      emit: (e) => this.record(e),
      intervalMs: this.o.intervalMs ?? 1000,
      releaseMode: this.o.releaseMode ?? 'pause',
    });
    this.load = new OpenLoopLoad({ ns: this.seg.ns, host: VIP, work: this.o.work ?? DEFAULT_WORK, timeoutMs: 60_000, onResult: this.o.onRequest });
    await this.load.start();
  }

  /** A replica of the Docker guest: 2 vCPUs, 1 GiB (dockerd), the k-th address of the range. */
  specFor(container: string, name: string): VmSpec {
    const k = this.autoscaler ? this.autoscaler.replicas(container).length : 0;
    const ip = `10.77.0.${20 + k}`;
    const t = this.origin.template;
    return { name, container, vcpus: ORIGIN_VCPUS, memMiB: ORIGIN_MEM_MIB, kernel: t.vmlinuz, initrd: t.initrd, cmdline: `ciel.ip=${ip}/24`, disk: 'overlay', ready: null };
  }

  private record(e: ControllerEvent): void {
    const t = { at: Date.now(), e };
    this.events.push(t);
    this.o.onEvent?.(t);
    if (e.type === 'scaled_out' && e.replica) void this.onScaledOut(e.replica);
  }

  /**
   * Watch the new replica from outside too (a pooled one is still attached), and find when IPVS first
   * sent it a request that ended. A scale-in removed its IPVS entry, so a resumed replica's counters
   * start again from 0.
   */
  private async onScaledOut(name: string): Promise<void> {
    const c = this.replicas.clone(name);
    if (!c) return;
    this.firstServed.delete(name);
    // a stopped replica booted again is a new QEMU (same sockets and RAM file names): attach anew
    if (this.sampler.session(name) && this.attachedPid.get(name) !== c.guest.pid) await this.sampler.detach(name).catch(() => {});
    if (!this.sampler.session(name)) {
      try {
        this.attachedPid.set(name, c.guest.pid);
        await this.sampler.attach({ name, backend: 'qemu', qmp: c.guest.qmpSocket, memory: c.guest.memFile, kernel: RELEASE }, { names: this.names });
      } catch (e) {
        this.log(`cannot attach the monitor to ${name}: ${(e as Error).message}`);
      }
    }
    const ip = this.tracking.address(name);
    while (!this.closed && ip && !this.firstServed.has(name)) {
      try {
        const rs = (await this.lb.realServers()).find((r) => r.address === ip);
        // InActConn: the client has closed a connection to it, i.e. read its answer (one request each)
        if (rs && rs.inactiveConns > 0) this.firstServed.set(name, Date.now());
      } catch {
        /* LB busy: next poll */
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** Running replicas of web (VM names). */
  replicaNames(): string[] {
    return this.autoscaler.replicas('web').map((v) => v.name);
  }

  start(): void {
    this.loop = this.autoscaler.run(this.ac.signal);
    const tickMs = this.o.tickMs ?? 1000;
    const prev = new Map<string, Sample>();
    let prevVm: { t: number; cpu: number } | undefined;
    let lastAt = Date.now();
    const tick = async () => {
      const at = Date.now();
      const vms: TrafficTick['vms'] = {};
      for (const vm of [this.originName, ...this.replicaNames()]) {
        if (!this.sampler.session(vm)) continue;
        try {
          const s = await this.sampler.baseline(vm);
          const p = prev.get(vm);
          prev.set(vm, s);
          if (!p) continue;
          const dt = (Date.parse(s.time) - Date.parse(p.time)) / 1000;
          if (dt <= 0) continue;
          const row: Record<string, ContainerPoint> = {};
          for (const c of s.containers) {
            const q = p.containers.find((x) => x.id === c.id);
            if (!q) continue;
            row[c.name ?? this.names[c.id] ?? c.id.slice(0, 12)] = {
              cpu: Math.max(0, (c.cpu_usage_ns - q.cpu_usage_ns) / 1e9 / dt),
              mem: c.memory_usage_bytes,
              rx: Math.max(0, (c.net_rx_bytes - q.net_rx_bytes) / dt),
              tx: Math.max(0, (c.net_tx_bytes - q.net_tx_bytes) / dt),
            };
          }
          vms[vm] = row;
        } catch (e) {
          this.log(`sample of ${vm} failed: ${(e as Error).message}`);
        }
      }
      let originVm = 0;
      try {
        const st = await this.vmSource.vmStats(this.originName);
        const now = Date.parse(st.time);
        if (prevVm) originVm = (st.cpu_time_ns - prevVm.cpu) / 1e9 / ((now - prevVm.t) / 1000);
        prevVm = { t: now, cpu: st.cpu_time_ns };
      } catch {
        /* origin gone: close() is coming */
      }
      const done = this.load.results.filter((r) => r.sent + r.lat >= lastAt && r.sent + r.lat < at);
      lastAt = at;
      const lat = done.filter((r) => r.ok).map((r) => r.lat);
      const t: TrafficTick = { t: this.since(at), at, vms, rate: this.load.rate, ok: lat.length, failed: done.length - lat.length, p50: quantile(lat, 0.5), p99: quantile(lat, 0.99), originVm };
      this.ticks.push(t);
      this.o.onTick?.(t);
    };
    const loop = () => {
      this.tickTimer = setTimeout(async () => {
        if (this.closed) return;
        await tick();
        if (!this.closed) loop();
      }, tickMs);
    };
    loop();
  }

  find(pred: (e: ControllerEvent) => boolean, from = 0): TimedEvent | undefined {
    return this.eventLog.find(pred, from);
  }

  waitFor<T>(fn: () => T | undefined | false, ms: number, what: string): Promise<T> {
    return this.eventLog.waitFor(fn, ms, what);
  }

  /**
   * Raise the client's rate step by step (each held `holdMs`) until `until()` holds; the last step is held
   * until then. Returns the epoch ms and rate of the step in force when it held (the crossing's step).
   */
  async stepRates(steps: number[], holdMs: number, until: () => boolean, timeoutMs: number): Promise<{ at: number; rate: number }> {
    let cur = { at: Date.now(), rate: 0 };
    const end = Date.now() + timeoutMs;
    for (const [i, rate] of steps.entries()) {
      if (until()) break;
      this.load.setRate(rate);
      cur = { at: Date.now(), rate };
      this.log(`client rate → ${rate} req/s`);
      const stepEnd = i === steps.length - 1 ? end : Date.now() + holdMs;
      while (Date.now() < stepEnd && !until()) await new Promise((r) => setTimeout(r, 100));
    }
    if (!until()) throw new Error(`nothing happened within ${timeoutMs} ms at ${cur.rate} req/s`);
    return cur;
  }

  /**
   * The "before" window: the origin alone serving the rate the controller decided at, from 3 s after that
   * step (the first tick after a step is partly the old rate) to the replica's first answer. The decision
   * comes seconds after a step, too few ticks to average; the rate is held unchanged until the replica
   * serves, so this is the longest window of the same rate without the replica.
   */
  static aloneWindow(stepAt: number, firstServedAt: number): { from: number; to: number } {
    return { from: stepAt + 3_000, to: firstServedAt };
  }

  /** Mean of a per-tick value over ticks in [from, to). */
  mean(from: number, to: number, f: (t: TrafficTick) => number | undefined): number | undefined {
    const v = this.ticks.filter((t) => t.at >= from && t.at < to).map(f).filter((x): x is number => x !== undefined);
    return v.length ? v.reduce((a, b) => a + b, 0) / v.length : undefined;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.ac.abort();
    if (this.tickTimer) clearTimeout(this.tickTimer);
    const step = cleanupSteps(this.log);
    await step('client', () => this.load?.stop());
    await step('controller', async () => {
      if (this.loop) await Promise.race([this.loop, new Promise((r) => setTimeout(r, 5_000))]);
    });
    await step('monitor', () => this.sampler.close());
    await step('replicas', () => this.replicas?.close());
    await step('balancer', () => this.lb?.close());
    await step('origin', () => this.origin?.stop());
    await step('netns', () => this.seg?.destroy());
    await step('files', () => rmSync(this.dir, { recursive: true, force: true }));
  }
}
