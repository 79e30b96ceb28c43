// `ciel monitor`: the daemon an operator runs on a host. It samples the containers of one or several
// VMs from outside (no agent in the guest) and shows them as a live table, JSON lines, and/or a
// Prometheus endpoint with cAdvisor's metric names. The loops live in monitor/loop.ts.
//
// Registering the command (for `ciel --help`) loads only commander and a few small modules: the loop,
// the exporter and the native runtime are imported inside the action, when the command runs.
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { BadFieldError, CielError, UsageError, VmError } from '../common/errors.ts';
import { parseInterval } from '../common/interval.ts';
import { DEFAULT_HOST, DEFAULT_PORT, parseListen } from '../monitor/listen-address.ts';
import type { ErrorKind, MonitoredVm, NamedSample } from '../monitor/loop.ts';
import { isBuildName } from '../common/build-artifact.ts';
import { DOMAIN_NAME, vmTarget } from '../vmi/target.ts';

interface MonitorCliOptions {
  qemu?: string;
  memory?: string;
  vmcore?: string;
  xen?: string;
  libvirt?: string;
  connect?: string;
  config?: string;
  kernel?: string;
  disk?: string;
  interval: string;
  count?: string;
  consistent?: boolean;
  json?: boolean;
  prometheus?: string;
  quiet?: boolean;
  vm?: string;
}

export { parseListen };

/** An error's text without the VM name when the output already names the VM. */
const detailOf = (vm: string, e: Error) => (e instanceof VmError && e.vm === vm ? e.detail : e.message);

const HELP_AFTER = `
Targets (exactly one):
  --qemu SOCKET --memory FILE   a live QEMU/KVM guest (RAM shared through memory-backend-file,share=on)
  --libvirt DOMAIN [--connect URI]   a running libvirt domain (default URI qemu:///system): QMP through
                                libvirt's passthrough (virsh qemu-monitor-command; libvirt keeps its QMP socket,
                                no extra QEMU arguments), RAM found from its QEMU process. The domain's RAM must be
                                shared: <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>
                                (or type='file'); libvirt's default private RAM is refused, naming the domain.
                                Run on the domain's host, as root. Resets are seen through virsh qemu-monitor-event.
  --memory FILE                 a raw physical-memory file without QMP (page tables from the guest's VMCOREINFO)
  --vmcore FILE                 one sample of an ELF dump (dump-guest-memory, virsh dump --memory-only), then exit;
                                CR3 from the dump's QEMU CPU notes
  --xen DOMID                   a Xen HVM/PVH domain, from Dom0 (needs /dev/xen/privcmd, libxenforeignmemory, libxenctrl)
  --config FILE                 several VMs from one JSON file; a VM that fails is reported on stderr and
                                retried (backoff 1 s doubling to 30 s), the others go on:
      {"vms": [{"name": "web1", "backend": "qemu", "qmp": "/run/web1.qmp", "memory": "/dev/shm/web1",
                "disk": "/var/lib/vms/web1.qcow2", "interval": 1},
               {"name": "db1", "backend": "xen", "domid": 3, "kernel": "6.1.0-56-amd64"},
               {"name": "app1", "libvirt": "app1-domain", "connect": "qemu:///system"}]}
    backend: qemu (qmp + memory), raw (memory), vmcore (vmcore: sampled once), xen (domid),
    libvirt (libvirt: the domain; connect: its URI, default qemu:///system; "backend" may be left out);
    kernel optional (as --kernel); interval in seconds (default 1); relative paths are relative to the file

Kernel:
  The monitor is compiled per guest kernel (generated/<release>/). Without --kernel (or "kernel"), the
  release is read from the guest's memory at every attach (VMCOREINFO, else its "Linux version" banner;
  a dump's own VMCOREINFO note) and printed on stderr ("kernel 6.1.0-56-amd64 (read from the guest: ...)");
  a release with no build yet is built on first use (Debian's packages, fetched and cached; progress on
  stderr; minutes the first time). A kernel Debian does not carry cannot be built that way: the error
  names the release found; build it from its own tree (ciel build --kernel-dir DIR --system-map FILE).
  With --kernel, the build must be for the kernel the guest runs: a build for another release (or the
  same release name built from other Debian packages than the guest's banner names) is refused with
  both releases named.

Output:
  default      a table per VM (name, CPU %, memory, disk and network rates over the real time between samples),
               redrawn in place on a terminal, printed as plain blocks when stdout is not a terminal
  --json       one JSON sample per line instead (cumulative counters; name/image from --disk)
  --prometheus [HOST:]PORT   also serve /metrics (default host 127.0.0.1; port 0 picks one, printed on stderr):
               cAdvisor's container_* metrics with labels id, name, image, vm, container_label_* (Docker
               labels, with --disk), interface/device/cpu where cAdvisor has them, container_last_seen,
               container_spec_* (limits from hostconfig.json, with --disk; docs/cadvisor.md), and the
               monitor's own ciel_sample_duration_seconds, ciel_sample_errors_total, ciel_tlb_hit_ratio
  --quiet      nothing on stdout (with --prometheus)

Errors go to stderr, prefixed by the VM name. Exit status: 0; 1 on bad options, when a single VM cannot
be opened at start (e.g. a libvirt domain unknown, not running or with private RAM), when a single VM's
QEMU goes away, or when every VM of a config gave up; 3 when --count was given and some round failed.
`;

export function registerMonitor(program: Command): void {
  program
    .command('monitor')
    .description(
      'Read per-container CPU, memory, disk and network usage of running VMs from outside (no agent in the guest). ' +
        "Finds each guest's kernel in its memory and builds the monitor for it on first use (or give --kernel).",
    )
    .option('--qemu <socket>', 'QMP unix socket of the QEMU process (registers, pause/resume); with --memory')
    .option('--memory <file>', "the guest's RAM file (QEMU -object memory-backend-file,share=on,mem-path=FILE), or a raw memory dump")
    .option('--vmcore <file>', 'ELF memory dump: print one sample and exit')
    .option('--xen <domid>', 'Xen domain id (HVM/PVH guest; run in Dom0)')
    .option('--libvirt <domain>', "a running libvirt domain with shared memory backing (QMP through libvirt's passthrough)")
    .option('--connect <uri>', 'libvirt connection URI for --libvirt (default qemu:///system)')
    .option('--config <file>', 'JSON file listing several VMs (format below)')
    .option('-k, --kernel <release>', "the guest's kernel release, e.g. 6.1.0-56-amd64 (default: read from the guest); its build must exist and fit the guest")
    .option('--disk <image>', "the VM's disk image (raw or qcow2, read-only): container names and images from /var/lib/docker")
    .option('-i, --interval <time>', 'time between samples: 1s, 250ms, ... (with --config: overrides every VM\'s "interval")', '1s')
    .option('-n, --count <n>', 'stop after N sampling rounds per VM (failed rounds count too)')
    .option('--consistent', 'pause the vCPUs around each sample (QMP stop/cont, through libvirt too; xc_domain_pause) and report the pause time')
    .option('--json', 'one JSON line per sample on stdout instead of the table')
    .option('--prometheus <[host:]port>', `serve /metrics on HOST:PORT (default host ${DEFAULT_HOST}, conventional port ${DEFAULT_PORT})`)
    .option('-q, --quiet', 'print no table or JSON (use with --prometheus)')
    .option('--vm <name>', 'VM name for samples and metrics (single VM; default: the --libvirt domain, else "vm")')
    .addHelpText('after', HELP_AFTER)
    .action(async (o: MonitorCliOptions, cmd: Command) => {
      const count = o.count === undefined ? undefined : Number(o.count);
      if (count !== undefined && !(Number.isInteger(count) && count > 0)) throw new UsageError('--count', `--count must be a positive integer, not '${o.count}'`);
      const intervalGiven = cmd.getOptionValueSource('interval') === 'cli';
      const intervalMs = parseInterval(o.interval);
      const vms = await targets(o, intervalMs, intervalGiven);
      const single = !o.config;
      const oneShot = vms.every((v) => v.backend === 'vmcore');
      if (oneShot && o.prometheus) throw new UsageError('--prometheus', '--prometheus needs a live VM (--vmcore prints one sample and exits)');
      if (o.quiet && o.json) throw new UsageError('--quiet', '--quiet and --json contradict each other');
      if (o.quiet && !o.prometheus) throw new UsageError('--quiet', '--quiet prints nothing: it only makes sense with --prometheus');

      const [{ runVms }, { LiveTable }, { RateTracker }, { kernelSessionOptions }] = await Promise.all([
        import('../monitor/loop.ts'),
        import('../monitor/live-table.ts'),
        import('../vmi/rates.ts'),
        import('./build-on-first-use.ts'),
      ]);
      const ac = new AbortController();
      const stop = () => ac.abort();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      // a reader that went away (`ciel monitor --json | head`) ends the monitor quietly
      let stdoutGone = false;
      const onStdoutError = (e: NodeJS.ErrnoException) => {
        if (e.code !== 'EPIPE') throw e;
        stdoutGone = true;
        stop();
      };
      process.stdout.on('error', onStdoutError);

      let exporter: import('../monitor/prometheus.ts').PrometheusExporter | undefined;
      if (o.prometheus) {
        const { PrometheusExporter, EVERY_INTERFACE_WARNING } = await import('../monitor/prometheus.ts');
        exporter = new PrometheusExporter(parseListen(o.prometheus));
        exporter.expectVms(vms.map((v) => v.name));
        const a = await exporter.listen();
        process.stderr.write(`ciel monitor: metrics at ${a.url}${a.everyInterface ? EVERY_INTERFACE_WARNING : ''}\n`);
      }
      const tracker = new RateTracker();
      const table = o.json || o.quiet || oneShot ? undefined : new LiveTable(process.stdout);
      const say = (vm: string, m: string) => process.stderr.write(`ciel monitor: ${vm}: ${m}\n`);

      let results;
      try {
        results = await runVms(
          vms,
          {
            onSample: (s: NamedSample, info) => {
              // a truncated walk (cyclic list, limits) is incomplete data: the exporter counts it as an error
              if (s.truncated?.length) say(s.vm, `sample truncated (${s.truncated.join(', ')}): guest lists too long or cyclic`);
              exporter?.onSample(s, info);
              if (stdoutGone) return;
              if (o.json) process.stdout.write(JSON.stringify(s) + '\n');
              else if (oneShot) process.stdout.write(formatLines(s));
              else if (table) table.update(tracker.update(s));
            },
            onError: (vm: string, e: Error, kind: ErrorKind) => {
              if (kind !== 'names') exporter?.onError(vm, e);
              const text = detailOf(vm, e);
              say(vm, kind === 'names' ? `container names unavailable: ${text}` : kind === 'open' ? text : `sample failed: ${text}`);
            },
            onNote: (vm, m) => {
              if (!single || process.stderr.isTTY) say(vm, m);
            },
          },
          { count, signal: ac.signal, failFast: single, endWhenGone: single, session: kernelSessionOptions((m) => process.stderr.write(`ciel monitor: ${m}\n`), !single) },
        );
      } finally {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        await exporter?.close();
      }
      const fatal = results.filter((r) => r.fatal);
      if (single && fatal.length) {
        const f = fatal[0].fatal!;
        throw f instanceof VmError ? new CielError(f.detail) : f instanceof CielError ? f : new CielError(f.message);
      }
      for (const r of fatal) say(r.vm, `gave up: ${detailOf(r.vm, r.fatal!)}`);
      if (fatal.length === results.length) process.exitCode = 1;
      else if (results.some((r) => r.errors > 0) && count !== undefined) process.exitCode = 3;
    });
}

/** The VMs the options name. */
async function targets(o: MonitorCliOptions, intervalMs: number, intervalGiven: boolean): Promise<MonitoredVm[]> {
  const given = [o.config && '--config', o.vmcore && '--vmcore', o.xen && '--xen', o.libvirt && '--libvirt', (o.qemu || o.memory) && (o.qemu ? '--qemu' : '--memory')].filter(Boolean);
  if (o.connect !== undefined && !o.libvirt) throw new UsageError('--connect', '--connect goes with --libvirt DOMAIN (in a config: "connect" per VM)');
  if (given.length === 0)
    throw new UsageError('target', 'monitor needs a target: --qemu SOCKET --memory FILE, --libvirt DOMAIN, --memory FILE, --vmcore FILE, --xen DOMID or --config FILE (see --help)');
  if (given.length > 1) throw new UsageError('target', `give one target, not ${given.join(' and ')}`);
  if (o.config) {
    for (const [flag, v] of [['--kernel', o.kernel], ['--disk', o.disk], ['--vm', o.vm]] as const)
      if (v !== undefined) throw new UsageError(flag, `${flag} does not go with --config (set it per VM in the file)`);
    const { loadConfig } = await import('../monitor/config.ts');
    const cfg = loadConfig(o.config);
    // a disk that is not there gives no names, ever: say so at start instead of warning every refresh
    cfg.vms.forEach((v, i) => {
      if (v.disk !== undefined && !existsSync(v.disk)) throw new BadFieldError(o.config!, `vms[${i}].disk`, `no such file: ${v.disk}`);
    });
    return cfg.vms.map(({ libvirt, connect, ...v }) => ({
      ...vmTarget({ ...v, ...(libvirt !== undefined ? { domain: libvirt } : {}), ...(connect !== undefined ? { uri: connect } : {}) }),
      disk: v.disk,
      intervalMs: intervalGiven ? intervalMs : v.interval * 1000,
      // only live backends can pause; a dump or a raw file is sampled as it is (VmSession knows which)
      consistent: o.consistent,
    }));
  }
  if (o.disk !== undefined && !existsSync(o.disk)) throw new UsageError('--disk', `--disk: no such file: ${o.disk}`);
  // a libvirt domain's name is the natural name of its samples
  const name = o.vm ?? o.libvirt ?? 'vm';
  // a name, never a path: `--kernel ../../etc` must not look for a build outside generated/
  if (o.kernel !== undefined && !isBuildName(o.kernel))
    throw new UsageError('--kernel', `--kernel: ${JSON.stringify(o.kernel)} is not a kernel release name (like 6.1.0-56-amd64: what \`uname -r\` prints in the guest)`);
  const base = { name, ...(o.kernel !== undefined ? { kernel: o.kernel } : {}) };
  const vm = (t: Parameters<typeof vmTarget>[0]): MonitoredVm => ({ ...vmTarget(t), disk: o.disk, intervalMs, consistent: o.consistent });
  if (o.vmcore) {
    if (o.consistent) throw new UsageError('--consistent', '--consistent makes no sense for a dump (it is already still)');
    return [vm({ ...base, backend: 'vmcore', vmcore: o.vmcore })];
  }
  if (o.xen) {
    const domid = Number(o.xen);
    if (!/^\d+$/.test(o.xen) || domid < 1 || domid > 0x7fef) throw new UsageError('--xen', `--xen wants a guest domain id 1..32751, not '${o.xen}'`);
    return [vm({ ...base, backend: 'xen', domid })];
  }
  if (o.libvirt) {
    if (!DOMAIN_NAME.test(o.libvirt)) throw new UsageError('--libvirt', `--libvirt: ${JSON.stringify(o.libvirt)} is not a libvirt domain name`);
    return [vm({ ...base, backend: 'libvirt', domain: o.libvirt, ...(o.connect !== undefined ? { uri: o.connect } : {}) })];
  }
  if (o.qemu) {
    if (!o.memory) throw new UsageError('--memory', '--qemu needs --memory FILE too (the guest RAM file)');
    return [vm({ ...base, backend: 'qemu', qmp: o.qemu, memory: o.memory })];
  }
  if (o.consistent) throw new UsageError('--consistent', '--consistent needs --qemu or --libvirt (a memory file alone cannot pause the guest)');
  return [vm({ ...base, backend: 'raw', memory: o.memory })];
}

/** Cumulative counters of one sample as plain lines (the one-shot --vmcore output). */
export function formatLines(s: NamedSample): string {
  const head = `${s.vm} ${s.time} kernel ${s.kernel}: ${s.containers.length} container(s), sampled in ${s.sample_us} us${s.pause_us !== undefined ? ` (paused ${s.pause_us} us)` : ''}\n`;
  return (
    head +
    s.containers
      .map(
        (c) =>
          `  ${(c.name ?? c.id.slice(0, 12)).padEnd(16)} ${c.id.slice(0, 12)}${c.image ? ` ${c.image}` : ''}  cpu ${(c.cpu_usage_ns / 1e9).toFixed(3)} s  mem ${c.memory_usage_bytes} B  io r/w ${c.io_read_bytes}/${c.io_write_bytes} B  net rx/tx ${c.net_rx_bytes}/${c.net_tx_bytes} B  pids ${c.pids}\n`,
      )
      .join('')
  );
}
