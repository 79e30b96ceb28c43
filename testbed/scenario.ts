// The autoscaling scenario shared by `npm run demo` (bin/demo.ts), the end-to-end test and the scaling
// bench: an origin VM (the test guest, booted bare, with the web/db/batch services of services.ts) watched
// from outside by the compiled monitor; the Autoscaler with the real VM-level stats (/proc/<qemu pid>),
// the real VMI sampler and the QEMU-direct provisioner; replicas on a private bridge inside a network
// namespace this scenario creates, registered with a load balancer.

import { existsSync, readFileSync, rmSync } from 'node:fs';
import { cacheDir } from '../common/cache.ts';
import { loadBuild } from '../common/build-artifact.ts';
import { Autoscaler, type Backend, type LoadBalancer } from '../controller/autoscaler.ts';
import { PolicyEngine } from '../controller/policy.ts';
import type { ControllerEvent, PolicyConfig } from '../controller/types.ts';
import { RoundRobinStubBalancer } from './lb-stub.ts';
import { MonitorSampler } from '../controller/monitor-sampler.ts';
import { ProcVmStats } from '../controller/proc-vm-stats.ts';
import { TrackingProvisioner, addressOf } from '../controller/tracking-provisioner.ts';
import { timeline, type TimedEvent, type ScaleOutTimeline } from '../controller/scale-out-timeline.ts';
import { cleanupSteps } from './cleanup.ts';
import { EventLog } from './event-log.ts';
import { IpvsVmBalancer } from './lb/ipvs-vm.ts';
import { L2Segment } from './lb/netns.ts';
import { ensureTestGuest, type TestGuest } from './minimal-guest.ts';
import type { Vm, VmSpec } from '../provisioners/provisioner.ts';
import { QemuDirectProvisioner } from '../provisioners/qemu-direct.ts';
import type { Sample } from '../vmi/sample.ts';
import { bootGuest, type Guest } from './guest/boot.ts';
import { SERVICE_CONTAINERS } from './guest/containers.ts';
import { serviceNames, setLoad, startServices, WEB_IDLE_VCPUS, type ServiceName } from './services.ts';

export const RELEASE = '6.1.0-56-amd64';
export const ORIGIN_VCPUS = 2;
export const ORIGIN_MEM_MIB = 512;
/** the balancer's virtual IP and its own address on the private segment */
export const VIP = '10.77.0.100';
/** the origin VM's own address on the bridge: its web container is the first backend behind the VIP */
export const ORIGIN_IP = '10.77.0.19';
export const LB_CIDR = '10.77.0.10/24';

/** What the scenario needs from a balancer beyond the controller's interface. */
export interface ScenarioBalancer extends LoadBalancer {
  kind: string;
  /** send n HTTP requests for the service (to the VIP, or round-robin for the stub); replies per body/address */
  drive(service: string, n: number): Promise<Record<string, number>>;
  /** requests per backend since the start */
  counts(): Promise<Record<string, number>> | Record<string, number>;
  close?(): Promise<void>;
}

/**
 * Thresholds for a 2-vCPU TCG origin on a shared 2-core host. VM level: QEMU's host CPU / 2 vCPUs; the
 * idle origin (db + batch + TCG overhead) reads 0.15-0.25, with web at 1.4 vCPUs 0.4-0.9. Container
 * level: guest CPU time / 2 vCPUs, exact (the cgroup quota shapes it): web at 1.4 vCPUs = 0.7.
 */
export function demoPolicy(o: { scaleDownWindowMs?: number; cooldownMs?: number } = {}): PolicyConfig {
  return {
    // vmTarget below vmThreshold (as HPA's target sits below where one would alarm): a container the trend
    // rule chooses is scaled out at the first hot interval. The rule only chooses a container that
    // carries at least half of the VM's reading (trendMinShare 0.5), so a noisy VM reading while the
    // periodic batch job steps up scales nothing.
    policies: [{ resource: 'cpu', vmThreshold: 0.35, containerThreshold: 0.45, target: 0.4, vmTarget: 0.3 }],
    scaleUpCooldownMs: o.cooldownMs ?? 60_000,
    scaleDownWindowMs: o.scaleDownWindowMs ?? 5_000,
    maxReplicas: 2,
  };
}

/** Rising web load (vCPUs) and how long each step is held (the last step: until a decision). */
export const RAMP: { vcpus: number; holdMs: number }[] = [
  { vcpus: WEB_IDLE_VCPUS, holdMs: 5_000 },
  { vcpus: 0.15, holdMs: 4_000 },
  { vcpus: 0.3, holdMs: 4_000 },
  { vcpus: 1.4, holdMs: 0 },
];

export interface ScenarioOptions {
  /** Autoscaler VM-level interval; default 500 ms */
  intervalMs?: number;
  policy?: PolicyConfig;
  /** replicas on a bridge in a namespace, serving HTTP, behind a balancer (default true) */
  network?: boolean;
  /**
   * the balancer (with network): 'ipvs' = IPVS direct routing in a load-balancer VM (testbed/lb/ipvs-vm.ts,
   * the default), 'stub' = the round-robin stand-in (testbed/lb-stub.ts, not IPVS)
   */
  balancer?: 'ipvs' | 'stub';
  /** progress lines */
  log?: (line: string) => void;
  /** every controller event as it happens */
  onEvent?: (t: TimedEvent) => void;
  /** every plot tick (per-container CPU, % of one vCPU) */
  onTick?: (t: Tick) => void;
  /** plot sampling period; default 500 ms; 0: none */
  tickMs?: number;
  /** unique tag for names (netns, VM names, dirs); default pid */
  tag?: string;
}

export interface Tick {
  /** seconds since the scenario started */
  t: number;
  /** per container: CPU in % of one vCPU (from outside, VMI) */
  cpu: Record<string, number>;
  /** VM level: origin QEMU host CPU, % of one host core */
  originVm: number;
  /** per replica VM: QEMU host CPU, % of one host core */
  replicas: Record<string, number>;
  sample_us: number;
}

export class Scenario {
  private readonly eventLog = new EventLog();
  readonly events: TimedEvent[] = this.eventLog.events;
  readonly ticks: Tick[] = [];
  readonly t0 = Date.now();
  origin!: Guest;
  guest!: TestGuest;
  prov!: QemuDirectProvisioner;
  tracking!: TrackingProvisioner;
  sampler = new MonitorSampler();
  vmSource!: ProcVmStats;
  engine!: PolicyEngine;
  autoscaler!: Autoscaler;
  lb!: ScenarioBalancer;
  seg?: L2Segment;
  private readonly dir: string;
  private readonly ac = new AbortController();
  private loop?: Promise<void>;
  private tickTimer?: NodeJS.Timeout;
  private closed = false;
  private readonly log: (l: string) => void;
  readonly tag: string;
  readonly originName: string;

  private constructor(readonly o: ScenarioOptions) {
    this.log = o.log ?? (() => {});
    this.tag = o.tag ?? String(process.pid);
    this.dir = cacheDir('e2e', `run-${this.tag}`);
    this.originName = `origin-${this.tag}`;
  }

  /** Seconds since the scenario started. */
  since(at = Date.now()): number {
    return (at - this.t0) / 1000;
  }

  static async setup(o: ScenarioOptions = {}): Promise<Scenario> {
    const s = new Scenario(o);
    try {
      await s.init();
    } catch (e) {
      await s.close();
      throw e;
    }
    return s;
  }

  private async init(): Promise<void> {
    const o = this.o;
    loadBuild(RELEASE); // the monitor must have been built (ciel build --kernel RELEASE)
    this.log('minimal replica image (kernel + busybox initramfs + qcow2 template, cached)');
    this.guest = await ensureTestGuest();
    const network = o.network ?? true;
    if (network) {
      this.seg = new L2Segment({ ns: `ciel-e2e-${this.tag}`.slice(0, 30), dir: this.dir });
      await this.seg.create();
      this.log(`private L2 segment: netns ${this.seg.ns}, bridge br0 ${this.seg.hostCidr}`);
    }
    const seg = this.seg;
    this.prov = new QemuDirectProvisioner({
      template: this.guest.template,
      dir: this.dir,
      ...(seg ? { wrapper: seg.wrapper, extraArgs: (vm: Vm, mac: string) => seg.nicArgs(vm, mac), netStats: (vm: Vm) => seg.netStats(vm) } : {}),
    });
    this.tracking = new TrackingProvisioner(this.prov);
    const addressOfBackend = (b: Backend) => (b.vm === this.originName ? ORIGIN_IP : this.tracking.address(b.vm));
    let lbStart: Promise<unknown> = Promise.resolve();
    if (seg && (o.balancer ?? 'ipvs') === 'ipvs') {
      const ipvs = new IpvsVmBalancer({ segment: seg, cidr: LB_CIDR, vip: VIP, dir: this.dir, name: `ciel-lb-${this.tag}`.slice(0, 40), addressOf: addressOfBackend, drainTimeoutMs: 5_000 });
      this.lb = Object.assign(ipvs, {
        kind: `IPVS direct routing in a load-balancer VM (VIP ${VIP})`,
        drive: async (_service: string, n: number) => {
          const r = await seg.exec('sh', ['-c', `i=0; while [ $i -lt ${n} ]; do curl -s --max-time 10 http://${VIP}/ || echo FAIL; echo; i=$((i+1)); done`], { timeoutMs: 60_000 + n * 10_000 });
          const by: Record<string, number> = {};
          // each backend answers "<container> <its address>": key the replies by the address, like the stub
          for (const line of r.stdout.split('\n').map((l) => l.trim()).filter(Boolean)) {
            const k = line.split(' ')[1] ?? line;
            by[k] = (by[k] ?? 0) + 1;
          }
          return by;
        },
      });
      this.log(`booting the load-balancer VM (IPVS, ${LB_CIDR}, VIP ${VIP}) in parallel`);
      lbStart = ipvs.start();
      lbStart.catch(() => {});
    } else if (seg) {
      this.lb = new RoundRobinStubBalancer({ ns: seg.ns, addressOf: addressOfBackend });
    } else {
      this.lb = { kind: 'recording stub (no network)', addBackend: async () => {}, removeBackend: async () => {}, drive: async () => ({}), counts: () => ({}) };
    }

    this.log('booting the origin VM (test guest, 2 vCPUs, 512 MiB, TCG)');
    const nic = seg ? { wrapper: seg.wrapper, extraArgs: seg.nicArgs({ name: this.originName } as Vm, '52:54:00:c1:e1:19') } : {};
    this.origin = await bootGuest({ name: this.originName, bare: true, memMiB: ORIGIN_MEM_MIB, smp: ORIGIN_VCPUS, log: (l) => this.log(l), ...nic });
    await startServices(this.origin);
    await lbStart;
    if (seg && (o.balancer ?? 'ipvs') === 'ipvs') {
      // The origin's web container is the first backend (as in the paper: the balancer spreads the
      // service over the original container and its scaled-out copies). Direct routing: VIP on lo.
      const web = SERVICE_CONTAINERS.find((c) => c.name === 'web')!;
      const net = [
        `/sbin/ip link set eth0 up`,
        `/sbin/ip addr add ${ORIGIN_IP}/24 dev eth0`,
        `/sbin/ip addr add ${VIP}/32 dev lo`,
        `for f in all eth0; do echo 1 > /proc/sys/net/ipv4/conf/$f/arp_ignore; echo 2 > /proc/sys/net/ipv4/conf/$f/arp_announce; done`,
        `mkdir -p /www/web && echo "web ${ORIGIN_IP}" > /www/web/index.html`,
        `(sh -c 'echo $$ > /sys/fs/cgroup${web.cgroup}/cgroup.procs; exec httpd -f -p 80 -h /www/web' </dev/null >/dev/null 2>&1 &)`,
        `echo net-ok`,
      ].join('; ');
      const r = await this.origin.sh(net, 30_000);
      if (!r.output.includes('net-ok')) throw new Error(`origin network setup failed: ${r.output}`);
      await this.lb.addBackend('web', { vm: this.originName, container: 'web' });
      this.log(`origin ${ORIGIN_IP} serves web behind the VIP ${VIP}`);
    }
    this.log('services web, db, batch started in Docker cgroup layouts');
    await this.sampler.attach(
      { name: this.originName, backend: 'qemu', qmp: this.origin.qmpSocket, memory: this.origin.memFile, kernel: RELEASE },
      { names: serviceNames() },
    );
    this.vmSource = new ProcVmStats(this.prov).add({ name: this.originName, pid: this.origin.pid, vcpus: ORIGIN_VCPUS, memMiB: ORIGIN_MEM_MIB });
    this.engine = new PolicyEngine(o.policy ?? demoPolicy(), Date.now);
    this.autoscaler = new Autoscaler({
      vms: [this.originName],
      engine: this.engine,
      vmSource: this.vmSource,
      sampler: this.sampler,
      provisioner: this.tracking,
      lb: this.lb,
      specFor: (c, name) => this.specFor(c, name),
      emit: (e) => this.record(e),
      intervalMs: o.intervalMs ?? 500,
    });
  }

  /** A minimal VM for one container: 1 vCPU, 256 MiB, an overlay disk, its own address when networked. */
  specFor(container: string, name: string): VmSpec {
    // The k-th replica of a container gets the k-th address of that container's range, whatever its VM
    // name: a paused pooled VM keeps its address, so the spec of the next replica matches it (pool reuse
    // needs an identical spec: a resumed guest cannot change its kernel command line).
    let ip: string | undefined;
    if (this.seg) {
      const ci = ['web', 'db', 'batch'].indexOf(container);
      const k = this.autoscaler ? this.autoscaler.replicas(container).length : 0;
      ip = `10.77.0.${20 + (ci < 0 ? 3 : ci) * 10 + k}`;
    }
    return {
      name,
      container,
      vcpus: 1,
      memMiB: 256,
      kernel: this.guest.kernel,
      initrd: this.guest.initrd,
      cmdline: this.guest.cmdline(container, ip ? { ip: `${ip}/24`, ...(this.lb instanceof IpvsVmBalancer ? { vip: VIP } : {}) } : {}),
      disk: 'overlay',
    };
  }

  private record(e: ControllerEvent): void {
    const t = { at: Date.now(), e };
    this.events.push(t);
    this.o.onEvent?.(t);
  }

  /** Start the controller loop and the plot sampler. */
  start(): void {
    this.loop = this.autoscaler.run(this.ac.signal);
    const tickMs = this.o.tickMs ?? 500;
    if (tickMs > 0) {
      let prev: Sample | undefined;
      let prevVm: { t: number; cpu: number } | undefined;
      const prevRep = new Map<string, { t: number; cpu: number }>();
      const tick = async () => {
        if (this.closed) return;
        try {
          const s = await this.sampler.sample(this.originName);
          const st = await this.vmSource.vmStats(this.originName);
          const now = Date.parse(st.time);
          const cpu: Record<string, number> = {};
          if (prev) {
            const dt = (Date.parse(s.time) - Date.parse(prev.time)) / 1000;
            for (const c of s.containers) {
              const p = prev.containers.find((x) => x.id === c.id);
              if (p && dt > 0) cpu[c.name ?? c.id] = Math.max(0, ((c.cpu_usage_ns - p.cpu_usage_ns) / 1e9 / dt) * 100);
            }
          }
          const originVm = prevVm ? ((st.cpu_time_ns - prevVm.cpu) / 1e9 / ((now - prevVm.t) / 1000)) * 100 : 0;
          prevVm = { t: now, cpu: st.cpu_time_ns };
          const replicas: Record<string, number> = {};
          for (const vms of [this.autoscaler.replicas('web'), this.autoscaler.replicas('db'), this.autoscaler.replicas('batch')]) {
            for (const vm of vms) {
              if (vm.state !== 'running') continue;
              try {
                const r = await this.prov.vmStats(vm);
                const rt = Date.parse(r.time);
                const p = prevRep.get(vm.name);
                if (p && rt > p.t) replicas[vm.name] = ((r.cpu_time_ns - p.cpu) / 1e9 / ((rt - p.t) / 1000)) * 100;
                prevRep.set(vm.name, { t: rt, cpu: r.cpu_time_ns });
              } catch {
                /* replica going away */
              }
            }
          }
          if (prev) {
            const t: Tick = { t: this.since(Date.parse(s.time)), cpu, originVm, replicas, sample_us: s.sample_us };
            this.ticks.push(t);
            this.o.onTick?.(t);
          }
          prev = s;
        } catch (e) {
          this.log(`plot sample failed: ${(e as Error).message}`);
        }
      };
      const loop = () => {
        this.tickTimer = setTimeout(async () => {
          await tick();
          if (!this.closed) loop();
        }, tickMs);
      };
      void tick().then(loop);
    }
  }

  async setLoad(name: ServiceName, vcpus: number): Promise<number> {
    return (await setLoad(this.origin, name, vcpus)).sentAt;
  }

  find(pred: (e: ControllerEvent) => boolean, from = 0): TimedEvent | undefined {
    return this.eventLog.find(pred, from);
  }

  waitFor<T>(fn: () => T | undefined | false, ms: number, what: string): Promise<T> {
    return this.eventLog.waitFor(fn, ms, what);
  }

  /**
   * Raise web's load along RAMP until the controller decides to scale out; returns the host time at
   * which the step that led to the decision was sent (the threshold crossing, as an upper bound).
   */
  async rampWeb(o: { from?: number; steps?: typeof RAMP; timeoutMs?: number } = {}): Promise<{ crossedAt: number; vcpus: number }> {
    const from = o.from ?? Date.now();
    const steps = o.steps ?? RAMP;
    const decided = () => this.find((e) => e.type === 'decision' && e.action === 'scale_out' && e.container === 'web', from);
    let crossedAt = from;
    let vcpus = steps[0]!.vcpus;
    for (const step of steps) {
      if (decided()) break;
      crossedAt = await this.setLoad('web', step.vcpus);
      vcpus = step.vcpus;
      this.log(`load: web → ${step.vcpus} vCPU`);
      if (step.holdMs > 0) {
        const end = Date.now() + step.holdMs;
        while (Date.now() < end && !decided()) await new Promise((r) => setTimeout(r, 50));
      }
    }
    await this.waitFor(decided, o.timeoutMs ?? 30_000, 'the scale-out decision');
    // The trend rule may decide on an earlier step, before the ramp's top; the load still goes on to its peak
    // (the input is the ramp, whatever the controller does), and crossedAt stays at the step it decided on.
    const peak = steps[steps.length - 1]!.vcpus;
    if (vcpus !== peak) {
      await this.setLoad('web', peak);
      this.log(`load: web → ${peak} vCPU (decided on an earlier step)`);
    }
    return { crossedAt, vcpus };
  }

  timeline(container: string, crossedAt: number): ScaleOutTimeline | undefined {
    return timeline(this.events, container, crossedAt);
  }

  /** What the replica's console says it runs (`CIEL-CONTAINERS a b`, else its `CIEL-READY x` lines). */
  replicaContainers(vmName: string): string[] {
    const vm = this.tracking.byName.get(vmName);
    if (!vm || !existsSync(vm.serialLog)) return [];
    const text = readFileSync(vm.serialLog, 'latin1');
    const lines = text.split(/\r?\n/);
    const cs = lines.filter((l) => l.startsWith('CIEL-CONTAINERS')).pop();
    if (cs) return cs.split(/\s+/).slice(1).filter(Boolean);
    return [...new Set(lines.filter((l) => l.startsWith('CIEL-READY ')).map((l) => l.split(/\s+/)[1]!))];
  }

  replicaAddress(vmName: string): string | undefined {
    const vm = this.tracking.byName.get(vmName);
    return vm ? addressOf(vm) : undefined;
  }

  /** Stop everything this scenario started: controller, replicas (pool included), origin, netns, files. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.ac.abort();
    if (this.tickTimer) clearTimeout(this.tickTimer);
    const step = cleanupSteps(this.log);
    await step('controller', async () => {
      if (this.loop) await Promise.race([this.loop, new Promise((r) => setTimeout(r, 5_000))]);
    });
    await step('monitor', () => this.sampler.close());
    await step('replicas', () => this.prov?.close());
    await step('balancer', () => this.lb?.close?.());
    await step('origin', () => this.origin?.stop());
    await step('netns', () => this.seg?.destroy());
    await step('files', () => rmSync(this.dir, { recursive: true, force: true }));
  }
}

