// `ciel autoscale`: the scaling controller (controller/) on the user's own VMs. Watches the
// containers of origin VMs from outside (VMI monitor + VM-level stats), decides like Kubernetes' HPA,
// and scales out only the hot container into a new minimal VM; or, in a dry run, only says what it would
// do. This file parses options, starts the service (controller/service.ts) built from the config
// (controller/config.ts), prints its events and maps the outcome to an exit status. The controller is
// imported inside the action, so `ciel --help` does not load it (common/errors.ts is loaded by main.ts anyway).
import type { Command } from 'commander';
import { UsageError } from '../common/errors.ts';
import type { ControllerEvent } from '../controller/types.ts';

interface AutoscaleCliOptions {
  config?: string;
  dryRun?: boolean;
  interval?: string;
  json?: boolean;
  count?: string;
  destroyOnExit?: boolean;
  prometheus?: string;
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
            "names": {"<docker id>": "web"}, "disk": "/var/lib/vms/web-vm.qcow2"},
           {"name": "db-vm", "libvirt": "db-domain", "uri": "qemu:///system"}],
   "policy": {"policies": [{"resource": "cpu", "vmThreshold": 0.7, "containerThreshold": 0.5, "target": 0.6}],
              "maxReplicas": 4, "scaleUpCooldownMs": 30000, "scaleDownWindowMs": 300000},
   "provisioner": {"kind": "qemu-direct", "template": "minimal.qcow2", "kernel": "vmlinuz", "initrd": "initrd.img",
                   "cmdline": "console=ttyS0 ciel.container={container}", "vcpus": 1, "memMiB": 256},
   "balancer": {"hook": "/usr/local/bin/lb-hook"}}

  vms[]: "kernel": the guest's kernel release; without it, it is read from the guest's memory when the VM
    is attached (printed on stderr), and a release with no build yet is built then (Debian's packages,
    cached; progress on stderr). A build for another kernel than the guest's is refused (exit 2).
    VM level, exactly one of: "pid" of a QEMU process started directly (/proc; needs "vcpus" and
    "memMiB"), or "libvirt": "DOMAIN" with optional "uri" (default qemu:///system; virsh domstats).
    Container level: a "pid" VM needs "qmp" + "memory" (QEMU's QMP socket and its guest RAM file,
    memory-backend-file share=on). A "libvirt" VM needs neither: registers and pause go through libvirt's
    QMP passthrough (virsh qemu-monitor-command) and its RAM is found from its QEMU process, which needs
    shared memory backing in the domain's XML: <memoryBacking><source type='memfd'/><access mode='shared'/>
    </memoryBacking> (or type='file'); a domain with private RAM cannot be attached (exit 2). Give "qmp"
    + "memory" anyway to use a QMP socket of its own (a <qemu:commandline> -qmp argument).
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
  --prometheus [HOST:]PORT: the container samples the controller takes are also served on /metrics, in
  the series of \`ciel monitor --prometheus\` (cAdvisor's names, labels id, name, image, vm; no Docker
  labels or container_spec_*: the controller reads no disk; port 0 picks one, printed on stderr). They
  are as fresh as the controller's samples: every interval with containerBaseline "kept", only while a
  VM is hot (or scaled out) with "on-demand".

Stop with SIGINT/SIGTERM (or --count): the loop stops, running scale actions finish, replicas are left
  running and listed on stderr (QEMU-direct replicas run in their own process group, so a Ctrl-C does
  not reach them). --destroy-on-exit: the hook removes each serving replica, then it is destroyed.
  A second signal exits at once.

Exit status:
  0    stopped by a signal, or after --count intervals
  1    bad options or config (the message names the file and field), a missing file the config names,
       no monitor build for a VM's "kernel" (\`ciel build --kernel RELEASE\`), or a --prometheus address
       that cannot be bound
  2    could not start: a VM could not be attached (QMP, memory file, a libvirt domain unknown, not running or
       with private RAM, a "kernel" whose build is not for the
       kernel the guest runs, a guest kernel with no build that cannot be built), its VM-level stats could
       not be read, or the provisioner could not be set up
  3    with --count: an error or action_failed event happened during the run
  130  a second signal while stopping
`;

export function registerAutoscale(program: Command): void {
  const auto = program
    .command('autoscale')
    .description(
      'Watch the containers of running VMs from outside and scale out only the hot one into a new minimal VM ' +
        "(or, with --dry-run, print the decisions). Each guest's kernel is found in its memory and its monitor built on first use.",
    )
    .option('--config <file>', 'JSON file: VMs, policy, provisioner, balancer hook (format below)')
    .option('--dry-run', 'decide, but start nothing and run no hook')
    .option('-i, --interval <time>', 'time between VM-level checks: 1s, 200ms, ... (default: the config\'s "interval")')
    .option('--json', 'one JSON line per controller event on stdout')
    .option('-n, --count <n>', 'stop after N intervals')
    .option('--destroy-on-exit', 'on exit, destroy every replica this run started (default: leave them running)')
    .option('--prometheus <[host:]port>', 'also serve the sampled containers on /metrics (as `ciel monitor --prometheus`; default host 127.0.0.1)')
    .addHelpText('after', HELP_AFTER)
    .action(async (o: AutoscaleCliOptions) => {
      const code = await runAutoscale(o);
      // replicas' QMP connections would keep the process alive; what must survive us was detached
      process.exit(code);
    });
  auto
    .command('status')
    .description("the replicas (name, service, origin, state, address), the pool and the balancer entries from the controller's state, checked against the QEMU processes that run; read-only")
    .option('--config <file>', 'the config the controller runs with')
    .option('--json', 'one JSON object')
    .action(async (_o: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals<{ config?: string; json?: boolean }>();
      if (!o.config) throw new UsageError('--config', 'autoscale status needs --config FILE');
      const [{ loadAutoscaleConfig }, { autoscaleStatus, statusText }] = await Promise.all([import('../controller/config.ts'), import('../controller/replica-status.ts')]);
      const st = autoscaleStatus(loadAutoscaleConfig(o.config), o.config);
      process.stdout.write(o.json ? `${JSON.stringify(st)}\n` : `${statusText(st)}\n`);
    });
}

const say = (m: string) => process.stderr.write(`ciel autoscale: ${m}\n`);

export async function runAutoscale(o: AutoscaleCliOptions): Promise<number> {
  if (!o.config) throw new UsageError('--config', 'autoscale needs --config FILE (see `ciel autoscale --help` for the format)');
  const count = o.count === undefined ? undefined : Number(o.count);
  if (count !== undefined && !(Number.isInteger(count) && count > 0)) throw new UsageError('--count', `--count must be a positive integer, not '${o.count}'`);
  const { parseListen } = await import('../monitor/listen-address.ts');
  const listen = o.prometheus !== undefined ? parseListen(o.prometheus) : undefined;
  const [{ loadAutoscaleConfig }, { parseInterval }, { AutoscaleService, StartError }, { EventLines }, { jsonLines }] = await Promise.all([
    import('../controller/config.ts'),
    import('../common/interval.ts'),
    import('../controller/service.ts'),
    import('../controller/event-lines.ts'),
    import('../controller/autoscaler.ts'),
  ]);
  const cfg = loadAutoscaleConfig(o.config);
  const intervalMs = o.interval !== undefined ? parseInterval(o.interval) : cfg.interval * 1000;
  const dry = o.dryRun === true || !cfg.provisioner;
  if (o.destroyOnExit && dry) throw new UsageError('--destroy-on-exit', `--destroy-on-exit: nothing is started ${o.dryRun ? 'in a dry run' : 'without a "provisioner" in the config'}`);

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

  const lines = new EventLines(dry);
  const json = jsonLines(process.stdout);
  const print = (e: ControllerEvent) => {
    if (stdoutGone) return;
    if (o.json) json(dry && (e.type === 'scaled_out' || e.type === 'scaled_in') ? ({ ...e, dry_run: true } as ControllerEvent) : e);
    else {
      const l = lines.line(e);
      if (l) process.stdout.write(`${l}\n`);
    }
  };

  // the exporter sees what the controller samples: every interval with containerBaseline "kept"
  let exporter: import('../monitor/prometheus.ts').PrometheusExporter | undefined;
  if (listen) {
    const { PrometheusExporter, EVERY_INTERFACE_WARNING } = await import('../monitor/prometheus.ts');
    exporter = new PrometheusExporter(listen);
    exporter.expectVms(cfg.vms.map((v) => v.name));
    const a = await exporter.listen();
    say(`metrics at ${a.url}${a.everyInterface ? EVERY_INTERFACE_WARNING : ''}`);
  }
  const closeExporter = () => exporter?.close().catch((e: Error) => say(`closing the metrics server: ${e.message}`));

  const { kernelSessionOptions } = await import('./build-on-first-use.ts');
  const service = await AutoscaleService.start({
    config: cfg,
    session: kernelSessionOptions(say, true),
    configFile: o.config,
    intervalMs,
    dryRun: o.dryRun === true,
    destroyOnExit: o.destroyOnExit === true,
    ...(count !== undefined ? { count } : {}),
    emit: print,
    say,
    ...(exporter ? { observers: [exporter] } : {}),
  }).catch(async (e: unknown) => {
    await closeExporter();
    if (!(e instanceof StartError)) throw e;
    say(e.message);
    return undefined;
  });
  if (!service) return EXIT.cannotStart;
  say(`watching ${cfg.vms.length} VM(s) every ${intervalMs} ms (container baseline ${cfg.containerBaseline})${count ? `, ${count} interval(s)` : ''}; stop with Ctrl-C`);
  try {
    await service.run(ac.signal);
  } finally {
    await service.stop();
    await closeExporter();
  }
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  return count !== undefined && service.failures > 0 ? EXIT.errorsWithCount : EXIT.ok;
}
