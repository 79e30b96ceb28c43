// `ciel autoscale`: the scaling controller (controller/) on the user's own VMs. Watches the
// containers of origin VMs from outside (VMI monitor + VM-level stats), decides like Kubernetes' HPA,
// and scales out only the hot container into a new minimal VM; or, in a dry run, only says what it would
// do. The parts around the Autoscaler are controller/standalone.ts; the config config.ts.
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { GENERATED } from '../common/build-artifact.ts';
import { abortableSleep } from '../common/sleep.ts';
import { Autoscaler, jsonLines, type AutoscalerOptions, type LoadBalancer, type ReplicaProvisioner } from '../controller/autoscaler.ts';
import { loadAutoscaleConfig, type AutoscaleConfig, type AutoscaleVm } from '../controller/config.ts';
import { PolicyEngine } from '../controller/policy.ts';
import { DiskNames, DryRunProvisioner, HookBalancer, makeProvisioner, NO_BALANCER, ReplicaAddresses, replicaSpec, vmLevelSource } from '../controller/standalone.ts';
import type { ControllerEvent } from '../controller/types.ts';
import { autoscaleTarget, MonitorSampler, TrackingProvisioner } from '../controller/wiring.ts';
import { BadInputError, CielError } from '../common/errors.ts';
import { parseInterval } from '../common/interval.ts';
import type { Provisioner, Vm, VmSpec } from '../provisioners/provisioner.ts';
import { EventLines } from '../controller/event-lines.ts';

interface AutoscaleCliOptions {
  config?: string;
  dryRun?: boolean;
  interval?: string;
  json?: boolean;
  count?: string;
  destroyOnExit?: boolean;
}

/** Exit statuses (documented in --help). */
export const EXIT = { ok: 0, badInput: 1, cannotStart: 2, errorsWithCount: 3, forced: 130 } as const;

const HELP_AFTER = `
Config (JSON; unknown fields are errors; relative paths are relative to the file):
  {"interval": 1,                        seconds between VM-level checks (default 1; --interval overrides)
   "containerBaseline": "kept",          "kept" (default: one cheap unpaused VMI read per cool interval, so the
                                         first hot interval decides at once) or "on-demand" (no VMI while cool)
   "vms": [{"name": "web-vm", "kernel": "6.1.0-56-amd64",
            "qmp": "/run/web-vm.qmp", "memory": "/dev/shm/web-vm.ram",
            "pid": 1234, "vcpus": 2, "memMiB": 512,
            "names": {"<docker id>": "web"}, "disk": "/var/lib/vms/web-vm.qcow2"}],
   "policy": {"policies": [{"resource": "cpu", "vmThreshold": 0.7, "containerThreshold": 0.5, "target": 0.6}],
              "maxReplicas": 4, "scaleUpCooldownMs": 30000, "scaleDownWindowMs": 300000},
   "provisioner": {"kind": "qemu-direct", "template": "minimal.qcow2", "kernel": "vmlinuz", "initrd": "initrd.img",
                   "cmdline": "console=ttyS0 ciel.container={container}", "vcpus": 1, "memMiB": 256},
   "balancer": {"hook": "/usr/local/bin/lb-hook"}}

  vms[]: every VM needs "qmp" + "memory" (QEMU's QMP socket and its guest RAM file, memory-backend-file
    share=on): the container level reads registers and RAM through them, libvirt domains included.
    VM level, exactly one of: "pid" of a QEMU process started directly (/proc; needs "vcpus" and
    "memMiB"), or "libvirt": "DOMAIN" with optional "uri" (default qemu:///system; virsh domstats).
    "names": Docker id -> service name (else names from "disk", a raw/qcow2 image with /var/lib/docker,
    else the id). Containers are keyed by name: a service name must be unique across the VMs.
  policy: the fields of PolicyConfig (controller/README.md): policies[] {resource cpu|memory|disk|
    network, vmThreshold, containerThreshold, containerThresholds {name: fraction}, target, vmTarget}
    (fractions in (0, 1]), capacities {diskBytesPerSec, netBytesPerSec}, tolerance, scaleUpCooldownMs,
    scaleDownWindowMs, minReplicas, maxReplicas, trendPoints, trendHorizonS, trendMinShare, maxRateGapMs.
  provisioner (optional): kind "qemu-direct" (template: a qcow2 disk) or "libvirt" (template: a defined,
    inactive domain; "uri"); kernel, initrd, cmdline (must contain {container}), vcpus, memMiB, disk
    "overlay" (default) | "sparse-copy", dir (disks, logs, sockets), ready (console line that marks a
    replica ready, {container} filled in; default "CIEL-READY {container}"; null: do not wait),
    addresses (["10.0.0.20/24", ...]: each replica gets one for {ip} in its cmdline, which then must
    contain it; a replica holds its address while it exists, a paused pooled one keeps its own).
  balancer (optional): hook is run as \`HOOK add|remove SERVICE VM ADDRESS\` (ADDRESS: the replica's
    entry of "addresses" without /prefix, else ciel.ip=A/N from its cmdline, else "-"); an exit status
    other than 0 (or no exit in 30 s) is an action_failed event.

Dry run (--dry-run, or no "provisioner" in the config): VM-level stats and container samples are real
  (a VM is paused for a few ms around each container sample, as for real) and the policy decides as it
  would, but no replica is started and the hook is not run. The engine counts a decided replica as
  started, so later decisions (scale-in) are the ones it would make; action events say "would".

Output: a line per interesting event (VM hot/cool, container chosen, decision, replica started/drained,
  failures) on stdout; --json: one JSON line per controller event (vm_check every interval, vm_hot,
  containers_sampled, container_chosen, decision, scaled_out, ...; in a dry run scaled_out/scaled_in carry
  "dry_run": true). Progress and status on stderr.

Stop with SIGINT/SIGTERM (or --count): the loop stops, running scale actions finish, replicas are left
  running and listed on stderr (QEMU-direct replicas run in their own process group, so a Ctrl-C does
  not reach them). --destroy-on-exit: the hook removes each serving replica, then it is destroyed.
  A second signal exits at once.

Exit status:
  0    stopped by a signal, or after --count intervals
  1    bad options or config (the message names the file and field), a missing file the config names,
       or no monitor build for a VM's kernel (\`ciel build --kernel RELEASE\`)
  2    could not start: a VM could not be attached (QMP, memory file), its VM-level stats could not be
       read, or the provisioner could not be set up
  3    with --count: an error or action_failed event happened during the run
  130  a second signal while stopping
`;

export function registerAutoscale(program: Command): void {
  program
    .command('autoscale')
    .description(
      'Watch the containers of running VMs from outside and scale out only the hot one into a new minimal VM ' +
        '(or, with --dry-run, print the decisions). Needs a monitor build per guest kernel (`ciel build --kernel RELEASE`).',
    )
    .option('--config <file>', 'JSON file: VMs, policy, provisioner, balancer hook (format below)')
    .option('--dry-run', 'decide, but start nothing and run no hook')
    .option('-i, --interval <time>', 'time between VM-level checks: 1s, 200ms, ... (default: the config\'s "interval")')
    .option('--json', 'one JSON line per controller event on stdout')
    .option('-n, --count <n>', 'stop after N intervals')
    .option('--destroy-on-exit', 'on exit, destroy every replica this run started (default: leave them running)')
    .addHelpText('after', HELP_AFTER)
    .action(async (o: AutoscaleCliOptions) => {
      const code = await runAutoscale(o);
      // replicas' QMP connections would keep the process alive; what must survive us was detached
      process.exit(code);
    });
}

const say = (m: string) => process.stderr.write(`ciel autoscale: ${m}\n`);

/** `{"pid"...}` or `{"libvirt"...}` in words. */
function levelOf(v: AutoscaleVm): string {
  return v.stats.kind === 'proc' ? `/proc/${v.stats.pid}, ${v.stats.vcpus} vCPUs, ${v.stats.memMiB} MiB` : `libvirt domain ${v.stats.domain} (${v.stats.uri})`;
}

/** Fail early (exit 1) on what the config names but the host lacks. */
function checkHost(cfg: AutoscaleConfig, file: string, real: boolean): void {
  for (const k of new Set(cfg.vms.map((v) => v.kernel)))
    if (!existsSync(join(GENERATED, k, 'monitor.so')))
      throw new CielError(`no monitor build for kernel ${k} (${join(GENERATED, k, 'monitor.so')} is missing): run \`ciel build --kernel ${k}\` first`);
  if (!real) return;
  const p = cfg.provisioner!;
  const files: [string, string][] = [['provisioner.kernel', p.kernel], ['provisioner.initrd', p.initrd]];
  if (p.kind === 'qemu-direct') files.push(['provisioner.template', p.template]);
  for (const [field, f] of files) if (!existsSync(f)) throw new BadInputError(file, `${field}: ${f} does not exist`);
  if (cfg.balancer) {
    try {
      accessSync(cfg.balancer.hook, constants.X_OK);
    } catch (e) {
      throw new BadInputError(file, `balancer.hook: ${cfg.balancer.hook} is not an executable file (${(e as NodeJS.ErrnoException).code})`);
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

export async function runAutoscale(o: AutoscaleCliOptions): Promise<number> {
  if (!o.config) throw new CielError('autoscale needs --config FILE (see `ciel autoscale --help` for the format)');
  const count = o.count === undefined ? undefined : Number(o.count);
  if (count !== undefined && !(Number.isInteger(count) && count > 0)) throw new CielError(`--count must be a positive integer, not '${o.count}'`);
  const cfg = loadAutoscaleConfig(o.config);
  const intervalMs = o.interval !== undefined ? parseInterval(o.interval) : cfg.interval * 1000;
  const dry = o.dryRun === true || !cfg.provisioner;
  if (o.destroyOnExit && dry) throw new CielError(`--destroy-on-exit: nothing is started ${o.dryRun ? 'in a dry run' : 'without a "provisioner" in the config'}`);
  checkHost(cfg, o.config, !dry);

  // signals: the first stops the loop (running actions finish), a second one exits at once
  const ac = new AbortController();
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    if (++signals > 1) {
      say(`${sig} again: exiting now`);
      process.exit(EXIT.forced);
    }
    say(`${sig}: stopping (running scale actions finish; a second signal exits at once)`);
    ac.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // a reader that went away (`ciel autoscale --json | head`) stops the controller quietly
  let stdoutGone = false;
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') throw e;
    stdoutGone = true;
    ac.abort();
  });

  const sampler = new MonitorSampler();
  const vmSource = vmLevelSource(cfg.vms);
  const disks = new Map<string, DiskNames>();
  for (const v of cfg.vms) {
    const names = new Map(Object.entries(v.names));
    if (v.disk) {
      const d = new DiskNames(v.disk, names, new Set(names.keys()), (e) => say(`${v.name}: container names unavailable: ${e.message}`));
      disks.set(v.name, d);
      await d.refresh();
    }
    const fail = async (what: string, e: unknown) => {
      say(`${v.name}: cannot start: ${what}: ${(e as Error).message}`);
      await sampler.close();
      return EXIT.cannotStart;
    };
    try {
      await vmSource.vmStats(v.name);
    } catch (e) {
      return fail(v.stats.kind === 'proc' ? `no VM-level stats from /proc/${v.stats.pid} (is QEMU running with that pid?)` : `no VM-level stats from libvirt`, e);
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
      await sampler.attach(autoscaleTarget(v), { names });
    } catch (e) {
      return fail('cannot attach the monitor', e);
    }
    say(`${v.name}: attached (kernel ${v.kernel}; VM level: ${levelOf(v)})`);
  }
  // names of containers that appear later: the disk is re-read when it changed or an id is new
  sampler.onSample = (s) => {
    const d = s.vm ? disks.get(s.vm) : undefined;
    if (d && s.containers.some((c) => c.name === undefined)) void d.refresh(s.containers.map((c) => c.id));
  };

  let real: Provisioner | undefined;
  let tracking: TrackingProvisioner | undefined;
  let provisioner: ReplicaProvisioner;
  let lb: LoadBalancer = NO_BALANCER;
  const dryRun = dry ? new DryRunProvisioner() : undefined;
  const runTag = Date.now().toString(36);
  const addrs = cfg.provisioner?.addresses ? new ReplicaAddresses(cfg.provisioner.addresses) : undefined;
  const dryPool: Vm[] = [];
  if (dryRun) {
    provisioner = {
      acquire: async (spec: VmSpec) => {
        const a = await dryRun.acquire(spec);
        addrs?.taken(spec.name, a.vm.name);
        return a;
      },
      release: async (vm, mode) => {
        await dryRun.release(vm, mode);
        dryPool.push(vm); // its address stays with it, as a real pooled replica's does
      },
    };
    say(`${o.dryRun ? 'dry run' : 'no "provisioner" in the config'}: decisions only, no replica is started${cfg.balancer ? ', the balancer hook is not run' : ''}`);
  } else {
    try {
      real = makeProvisioner(cfg.provisioner!, { keepOnExit: !o.destroyOnExit });
    } catch (e) {
      say(`cannot start: provisioner: ${(e as Error).message}`);
      await sampler.close();
      return EXIT.cannotStart;
    }
    tracking = new TrackingProvisioner(real);
    const t = tracking;
    // replicas an earlier run left running keep their names (disks, sockets): this run's get its own
    provisioner = {
      acquire: async (spec: VmSpec) => {
        const a = await t.acquire({ ...spec, name: `${spec.name}-${runTag}` });
        addrs?.taken(spec.name, a.vm.name);
        return a;
      },
      release: (vm, mode) => t.release(vm, mode),
    };
    if (cfg.balancer) lb = new HookBalancer(cfg.balancer.hook, (b) => addrs?.address(b.vm) ?? t.address(b.vm));
    else say('no "balancer" in the config: replicas are started, but no load balancer is told about them');
  }

  let failures = 0;
  /** replica → container, registered with the balancer (scaled_out until scaled_in) */
  const serving = new Map<string, string>();
  const lines = new EventLines(dry);
  const json = jsonLines(process.stdout);
  const emit = (e: ControllerEvent) => {
    if (e.type === 'error' || e.type === 'action_failed') failures++;
    if (e.type === 'scaled_out' && e.replica) serving.set(e.replica, e.container);
    if (e.type === 'scaled_in' && e.replica) serving.delete(e.replica);
    if (stdoutGone) return;
    if (o.json) json(dry && (e.type === 'scaled_out' || e.type === 'scaled_in') ? ({ ...e, dry_run: true } as ControllerEvent) : e);
    else {
      const l = lines.line(e);
      if (l) process.stdout.write(`${l}\n`);
    }
  };
  const autoscaler = new CountedAutoscaler(
    {
      vms: cfg.vms.map((v) => v.name),
      engine: new PolicyEngine(cfg.policy, Date.now),
      vmSource,
      sampler,
      provisioner,
      lb,
      specFor: (container, name) =>
        cfg.provisioner
          ? replicaSpec(cfg.provisioner, container, name, addrs?.forSpec(name, container, real?.pooled() ?? dryPool))
          : { name, container, vcpus: 1, memMiB: 256, kernel: '', initrd: '', cmdline: '', disk: 'overlay' },
      emit,
      intervalMs,
      containerBaseline: cfg.containerBaseline,
      sleep: (ms) => abortableSleep(ms, ac.signal),
    },
    (n) => {
      if (count !== undefined && n >= count) ac.abort();
    },
  );
  say(`watching ${cfg.vms.length} VM(s) every ${intervalMs} ms (container baseline ${cfg.containerBaseline})${count ? `, ${count} interval(s)` : ''}; stop with Ctrl-C`);
  try {
    await autoscaler.run(ac.signal);
  } finally {
    await sampler.close().catch((e: Error) => say(`closing the monitor: ${e.message}`));
  }

  say(`stopped after ${autoscaler.steps} interval(s)`);
  if (dryRun) {
    const started = dryRun.actions.filter((a) => a.op === 'start');
    if (started.length) say(`dry run: would have started ${started.map((a) => `${a.vm} (${[a.container, addrs?.address(a.vm)].filter(Boolean).join(', ')})`).join(', ')}`);
  } else if (real && tracking) {
    const left = [...tracking.byName.values()].filter((v) => v.state === 'running' || v.state === 'paused');
    if (o.destroyOnExit) {
      // the balancer first: no request goes to a replica that is about to disappear
      for (const [vm, container] of serving)
        await lb.removeBackend(container, { vm, container }).catch((e: Error) => say(`balancer: ${e.message}`));
      await real.close().catch((e: Error) => say(`destroying replicas: ${e.message}`));
      if (tracking.byName.size) say(`destroyed ${tracking.byName.size} replica VM(s) (--destroy-on-exit)`);
    } else if (left.length) {
      const files = (v: (typeof left)[number]) => [`disk ${v.disk}`, v.ramFile ? `RAM ${v.ramFile}` : ''].filter(Boolean).join(', ');
      const registered = cfg.balancer && serving.size ? `; registered with the balancer: ${[...serving.keys()].join(', ')}` : '';
      say(`left running (no --destroy-on-exit)${registered}: ${left.map((v) => `${v.name} (${v.spec.container}, ${v.state}${v.pid ? `, pid ${v.pid}` : ''}, ${files(v)})`).join('; ')}`);
    }
  }
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  return count !== undefined && failures > 0 ? EXIT.errorsWithCount : EXIT.ok;
}
