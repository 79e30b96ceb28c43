// The running autoscaler of `ciel autoscale`, assembled from a validated config (config.ts): the
// VM-level sources (vm-level-source.ts), the container sampler over the VMI monitor, the provisioner
// (real, or the dry run's), the balancer hook, and an event sink. The CLI (cli/autoscale.ts) parses
// options, starts this, prints its events and turns its outcome into an exit status.
//
// Failures are typed so the CLI can map them: a missing build or file the config names is a
// BadInputError / BadFieldError (bad input), a VM that cannot be attached or read, or a provisioner that
// cannot be set up, is a StartError (could not start).

import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GENERATED } from '../common/build-artifact.ts';
import { BadFieldError, BadInputError, CielError, VmError } from '../common/errors.ts';
import { abortableSleep } from '../common/sleep.ts';
import type { VmPool } from '../provisioners/pool.ts';
import type { Vm, VmSpec } from '../provisioners/provisioner.ts';
import type { SampleObserver } from '../vmi/session.ts';
import { Autoscaler, type AutoscalerOptions, type LoadBalancer, type ReplicaProvisioner, type VmStatsSource } from './autoscaler.ts';
import type { AutoscaleConfig, AutoscaleVm } from './config.ts';
import { DiskNames } from './disk-names.ts';
import { DryRunProvisioner } from './dry-run.ts';
import { HookBalancer, NO_BALANCER } from './hook-balancer.ts';
import { PolicyEngine } from './policy.ts';
import { ReplicaAddresses } from './replica-addresses.ts';
import { checkTemplateDomain } from '../provisioners/libvirt.ts';
import { makeProvisioner, replicaSpec } from './replica-provisioner.ts';
import type { ControllerEvent } from './types.ts';
import { vmLevelSource } from './vm-level-source.ts';
import { autoscaleTarget, MonitorSampler } from './monitor-sampler.ts';
import type { SessionOptions } from '../vmi/session.ts';
import { TrackingProvisioner } from './tracking-provisioner.ts';
import { DurableReplicas } from './durable-replicas.ts';
import { reconcile } from './reconcile.ts';
import { replicaName } from './scale-actions.ts';
import { StateStore } from './state-store.ts';

/** The service could not start: a VM (attach, VM-level stats) or the provisioner. */
export class StartError extends CielError {
  constructor(
    /** the VM that could not be attached or read; undefined: the provisioner */
    readonly vm: string | undefined,
    detail: string,
  ) {
    super(vm ? `${vm}: cannot start: ${detail}` : `cannot start: ${detail}`);
  }
}

export interface AutoscaleServiceOptions {
  config: AutoscaleConfig;
  /** the config file, named in errors */
  configFile: string;
  intervalMs: number;
  /** --dry-run: decide only (a config without a provisioner is a dry run too) */
  dryRun: boolean;
  /** on stop, remove serving replicas from the balancer and destroy every replica this run started */
  destroyOnExit: boolean;
  /** stop after this many intervals */
  count?: number;
  /** every controller event */
  emit(e: ControllerEvent): void;
  /** status and progress, one line each */
  say(m: string): void;
  /** for each VM's monitor session: how a build missing for a guest's kernel is made, who is told the kernel used */
  session?: SessionOptions;
  /** also handed every container sample and sampling failure (e.g. the Prometheus exporter) */
  observers?: readonly SampleObserver[];
}

/** `{"pid"...}` or `{"libvirt"...}` in words. */
function levelOf(v: AutoscaleVm): string {
  return v.stats.kind === 'proc' ? `/proc/${v.stats.pid}, ${v.stats.vcpus} vCPUs, ${v.stats.memMiB} MiB` : `libvirt domain ${v.stats.domain} (${v.stats.uri})`;
}

/** Fail early on what the config names but the host lacks (bad input, before anything is attached). */
export function checkHost(cfg: AutoscaleConfig, file: string, real: boolean): void {
  // a VM without "kernel" gets its guest's, found (and built if need be) when it is attached
  for (const k of new Set(cfg.vms.flatMap((v) => (v.kernel !== undefined ? [v.kernel] : []))))
    if (!existsSync(join(GENERATED, k, 'monitor.so')))
      throw new BadInputError(join(GENERATED, k, 'monitor.so'), `no monitor build for kernel ${k}: run \`ciel build --kernel ${k}\` first`);
  if (!real || !cfg.provisioner) return;
  const p = cfg.provisioner;
  const files: [string, string][] = [['provisioner.kernel', p.kernel], ['provisioner.initrd', p.initrd]];
  if (p.kind === 'qemu-direct') files.push(['provisioner.template', p.template]);
  for (const [field, f] of files) if (!existsSync(f)) throw new BadFieldError(file, field, `${f} does not exist`);
  if (cfg.balancer) {
    try {
      accessSync(cfg.balancer.hook, constants.X_OK);
    } catch (e) {
      throw new BadFieldError(file, 'balancer.hook', `${cfg.balancer.hook} is not an executable file (${(e as NodeJS.ErrnoException).code})`);
    }
  }
}

/** The Autoscaler, counting its intervals (run() calls step() once per interval). */
class CountedAutoscaler extends Autoscaler {
  steps = 0;
  constructor(
    o: AutoscalerOptions,
    private readonly afterStep: (n: number) => void,
  ) {
    super(o);
  }

  override async step(): Promise<ControllerEvent[]> {
    try {
      return await super.step();
    } finally {
      this.afterStep(++this.steps);
    }
  }
}

export class AutoscaleService {
  /** decisions only: --dry-run, or no provisioner in the config */
  readonly dry: boolean;
  /** error and action_failed events so far */
  failures = 0;
  /** replica → container, registered with the balancer (scaled_out until scaled_in) */
  private readonly serving = new Map<string, string>();
  private readonly sampler: MonitorSampler;
  private readonly disks = new Map<string, DiskNames>();
  private readonly addrs: ReplicaAddresses | undefined;
  private readonly dryRunProvisioner: DryRunProvisioner | undefined;
  private real: VmPool | undefined;
  /** what this config's controller intends and started (real runs only) */
  private store: StateStore | undefined;
  /** the user's balancer itself (this.lb records each step in the store first) */
  private rawLb: LoadBalancer = NO_BALANCER;
  private engine: PolicyEngine | undefined;
  private durable: DurableReplicas | undefined;
  private tracking: TrackingProvisioner | undefined;
  private lb: LoadBalancer = NO_BALANCER;
  private autoscaler: CountedAutoscaler | undefined;
  private vmSource: VmStatsSource | undefined;
  private readonly dryPool: Vm[] = [];
  /** aborted to stop the loop: by run()'s signal or after `count` intervals */
  private readonly stopper = new AbortController();

  private constructor(private readonly o: AutoscaleServiceOptions) {
    this.sampler = new MonitorSampler(o.session);
    const p = o.config.provisioner;
    this.addrs = p?.addresses ? new ReplicaAddresses(p.addresses) : undefined;
    this.dry = o.dryRun || !p;
    for (const ob of o.observers ?? []) this.sampler.observe(ob);
    this.dryRunProvisioner = this.dry ? new DryRunProvisioner() : undefined;
  }

  /** Check the host, attach every VM, set up the provisioner and balancer. Nothing runs yet. */
  static async start(o: AutoscaleServiceOptions): Promise<AutoscaleService> {
    const real = !(o.dryRun || !o.config.provisioner);
    checkHost(o.config, o.configFile, real);
    const p = o.config.provisioner;
    if (real && p?.kind === 'libvirt')
      await checkTemplateDomain(p.template, p.uri).catch((e: Error) => {
        throw new StartError(undefined, `provisioner.template: ${e.message}`);
      });
    const s = new AutoscaleService(o);
    try {
      await s.attach();
      s.assemble();
      await s.recover();
    } catch (e) {
      await s.sampler.close().catch(() => {});
      s.store?.close();
      throw e;
    }
    return s;
  }

  private async attach(): Promise<void> {
    const { config: cfg, say } = this.o;
    const vmSource = vmLevelSource(cfg.vms);
    for (const v of cfg.vms) {
      const names = new Map(Object.entries(v.names));
      if (v.disk) {
        const d = new DiskNames(v.disk, names, new Set(names.keys()), (e) => say(`${v.name}: container names unavailable: ${e.message}`));
        this.disks.set(v.name, d);
        await d.refresh();
      }
      try {
        await vmSource.vmStats(v.name);
      } catch (e) {
        const what = v.stats.kind === 'proc' ? `no VM-level stats from /proc/${v.stats.pid} (is QEMU running with that pid?)` : 'no VM-level stats from libvirt';
        throw new StartError(v.name, `${what}: ${e instanceof VmError ? e.detail : (e as Error).message}`);
      }
      if (v.stats.kind === 'proc') {
        let comm = 'qemu';
        try {
          comm = readFileSync(`/proc/${v.stats.pid}/comm`, 'utf8').trim();
        } catch {
          /* gone since: the loop will say so */
        }
        if (!comm.startsWith('qemu')) say(`${v.name}: warning: pid ${v.stats.pid} is "${comm}", not a QEMU process: VM-level stats are of that process`);
      }
      try {
        await this.sampler.attach(autoscaleTarget(v), { names });
      } catch (e) {
        throw new StartError(v.name, `cannot attach the monitor: ${e instanceof VmError ? e.detail : (e as Error).message}`);
      }
      say(`${v.name}: attached (kernel ${this.sampler.session(v.name)?.release ?? v.kernel}; VM level: ${levelOf(v)})`);
    }
    // names of containers that appear later: the disk is re-read when it changed or an id is new
    this.sampler.onSample = (s) => {
      const d = s.vm ? this.disks.get(s.vm) : undefined;
      if (d && s.containers.some((c) => c.name === undefined)) void d.refresh(s.containers.map((c) => c.id));
    };
    this.vmSource = vmSource;
  }

  /** The provisioner the Autoscaler uses: the dry run's, or the real one under this run's names. */
  private provisioner(): ReplicaProvisioner {
    const { config: cfg, say } = this.o;
    const addrs = this.addrs;
    const dry = this.dryRunProvisioner;
    if (dry) {
      say(`${this.o.dryRun ? 'dry run' : 'no "provisioner" in the config'}: decisions only, no replica is started${cfg.balancer ? ', the balancer hook is not run' : ''}`);
      return {
        acquire: async (spec: VmSpec) => {
          const a = await dry.acquire(spec);
          addrs?.taken(spec.name, a.vm.name);
          return a;
        },
        release: async (vm, mode) => {
          await dry.release(vm, mode);
          this.dryPool.push(vm); // its address stays with it, as a real pooled replica's does
        },
      };
    }
    let durable: DurableReplicas | undefined;
    try {
      this.store = StateStore.open(this.o.configFile);
      this.real = makeProvisioner(cfg.provisioner!, { keepOnExit: !this.o.destroyOnExit, beforeBoot: (vm) => durable!.cloned(vm) });
    } catch (e) {
      throw new StartError(undefined, `${this.store ? 'provisioner' : 'state'}: ${(e as Error).message}`);
    }
    const t = (this.tracking = new TrackingProvisioner(this.real));
    if (cfg.balancer) this.rawLb = new HookBalancer(cfg.balancer.hook, (b) => addrs?.address(b.vm) ?? t.address(b.vm));
    else say('no "balancer" in the config: replicas are started, but no load balancer is told about them');
    durable = this.durable = new DurableReplicas(this.store, t, this.rawLb, addrs);
    this.lb = durable.balancer;
    return durable.provisioner;
  }

  /** Real runs: make what runs agree with the state (reconcile.ts), then count from what serves. */
  private async recover(): Promise<void> {
    const { real, store, tracking, autoscaler, engine } = this;
    if (!real || !store || !tracking || !autoscaler || !engine) return;
    const { say, config: cfg } = this.o;
    say(`state: ${store.file}`);
    let r: Awaited<ReturnType<typeof reconcile>>;
    try {
      r = await reconcile({ store, pool: real, lb: this.rawLb, ...(this.addrs ? { addrs: this.addrs } : {}), maxReplicas: cfg.policy.maxReplicas ?? 10 });
    } catch (e) {
      throw new StartError(undefined, `reconciling with the state in ${store.file}: ${(e as Error).message}`);
    }
    for (const l of r.done) say(`reconcile: ${l}`);
    for (const [container, list] of r.serving) {
      for (const { vm } of list) {
        autoscaler.actions.adopt(container, vm);
        tracking.byName.set(vm.name, vm);
        this.serving.set(vm.name, container);
      }
      engine.setReplicas(container, list.length + 1, list[0]!.origin);
    }
    for (const vm of real.pooled()) tracking.byName.set(vm.name, vm);
  }

  private assemble(): void {
    const { config: cfg } = this.o;
    const provisioner = this.provisioner();
    const store = this.store;
    const engine = (this.engine = new PolicyEngine(cfg.policy, Date.now));
    this.autoscaler = new CountedAutoscaler({
      vms: cfg.vms.map((v) => v.name),
      engine,
      maxReplicas: cfg.policy.maxReplicas ?? 10,
      // names are never reused, across restarts too (the state counts), and carry this config's prefix
      ...(store ? { nameFor: (container: string) => replicaName(container, store.nextSeq(), store.prefix) } : {}),
      vmSource: this.vmSource!,
      sampler: this.sampler,
      provisioner,
      lb: this.lb,
      specFor: (container, name, origin) => {
        const spec: VmSpec = cfg.provisioner
          ? replicaSpec(cfg.provisioner, container, name, this.addrs?.forSpec(name, container, this.real?.pooled() ?? this.dryPool))
          : { name, container, vcpus: 1, memMiB: 256, kernel: '', initrd: '', cmdline: '', disk: 'overlay' };
        return this.durable ? this.durable.specMade(spec, origin) : spec;
      },
      emit: (e) => this.onEvent(e),
      intervalMs: this.o.intervalMs,
      containerBaseline: cfg.containerBaseline,
      sleep: (ms) => abortableSleep(ms, this.stopper.signal),
    }, (n) => {
      if (this.o.count !== undefined && n >= this.o.count) this.stopper.abort();
    });
  }

  /** intervals run so far */
  get steps(): number {
    return this.autoscaler?.steps ?? 0;
  }

  private onEvent(e: ControllerEvent): void {
    if (e.type === 'error' || e.type === 'action_failed') this.failures++;
    if (e.type === 'scaled_out' && e.replica) this.serving.set(e.replica, e.container);
    if (e.type === 'scaled_in' && e.replica) this.serving.delete(e.replica);
    this.o.emit(e);
  }

  /** Run until `signal` aborts or `count` intervals are done; running scale actions finish. */
  async run(signal: AbortSignal): Promise<void> {
    const stop = () => this.stopper.abort();
    if (signal.aborted) stop();
    signal.addEventListener('abort', stop, { once: true });
    try {
      await this.autoscaler!.run(this.stopper.signal);
    } finally {
      signal.removeEventListener('abort', stop);
    }
  }

  /** Detach from the VMs; with destroyOnExit, unregister and destroy the replicas; report what is left. */
  async stop(): Promise<void> {
    const { say, destroyOnExit, config: cfg } = this.o;
    await this.sampler.close().catch((e: Error) => say(`closing the monitor: ${e.message}`));
    say(`stopped after ${this.steps} interval(s)`);
    const dry = this.dryRunProvisioner;
    if (dry) {
      const started = dry.actions.filter((a) => a.op === 'start');
      if (started.length) say(`dry run: would have started ${started.map((a) => `${a.vm} (${[a.container, this.addrs?.address(a.vm)].filter(Boolean).join(', ')})`).join(', ')}`);
      return;
    }
    try {
      await this.leave();
    } finally {
      this.store?.close();
    }
  }

  /** Real runs: destroy the replicas (destroyOnExit), or say what is left running. */
  private async leave(): Promise<void> {
    const { say, destroyOnExit, config: cfg } = this.o;
    const real = this.real;
    const tracking = this.tracking;
    if (!real || !tracking) return;
    const left = [...tracking.byName.values()].filter((v) => v.state === 'running' || v.state === 'paused');
    if (destroyOnExit) {
      // the balancer first: no request goes to a replica that is about to disappear
      for (const [vm, container] of this.serving) await this.lb.removeBackend(container, { vm, container }).catch((e: Error) => say(`balancer: ${e.message}`));
      await real.close().catch((e: Error) => say(`destroying replicas: ${e.message}`));
      if (tracking.byName.size) say(`destroyed ${tracking.byName.size} replica VM(s) (--destroy-on-exit)`);
      // the state forgets what is gone (a replica that could not be destroyed stays for the next start)
      const store = this.store;
      if (store) {
        const remaining = real.leftovers(store.prefix);
        for (const r of store.all()) if (!remaining.has(r.name)) store.delete(r.name);
      }
    } else if (left.length) {
      const files = (v: (typeof left)[number]) => [`disk ${v.disk}`, v.ramFile ? `RAM ${v.ramFile}` : ''].filter(Boolean).join(', ');
      const registered = cfg.balancer && this.serving.size ? `; registered with the balancer: ${[...this.serving.keys()].join(', ')}` : '';
      say(`left running (no --destroy-on-exit)${registered}: ${left.map((v) => `${v.name} (${v.spec.container}, ${v.state}${v.pid ? `, pid ${v.pid}` : ''}, ${files(v)})`).join('; ')}`);
    }
  }
}
