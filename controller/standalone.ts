// The parts `ciel autoscale` (cli/autoscale.ts) puts around the Autoscaler when a user runs it on their
// own VMs, from the config of config.ts:
//  * vmLevelSource: VM-level stats from /proc of a QEMU pid (ProcVmStats) or `virsh domstats` (libvirt)
//  * replicaSpec / makeProvisioner: replicas from a qemu-direct template disk or a libvirt template domain
//  * DryRunProvisioner: records what it would start or release; nothing is started
//  * HookBalancer: tells the user's load balancer through a program, `HOOK add|remove SERVICE VM ADDRESS`
//  * DiskNames: Docker id → name from the VM's disk image (disk/), as `ciel monitor --disk`

import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { DiskNamesWatch } from '../disk/names-watch.ts';
import { LibvirtProvisioner } from '../provisioners/libvirt.ts';
import type { Acquired, Provisioner, ReleaseMode, Vm, VmSpec } from '../provisioners/provisioner.ts';
import { QemuDirectProvisioner } from '../provisioners/qemu-direct.ts';
import type { Backend, LoadBalancer, ReplicaProvisioner, VmStatsSource } from './autoscaler.ts';
import type { AutoscaleVm, ReplicaProvisionerConfig } from './config.ts';
import type { VmStats } from './types.ts';
import { ProcVmStats } from './wiring.ts';

// ---------------------------------------------------------------------------------------------
// VM level

/**
 * VM-level stats of the configured origin VMs, under their configured names: /proc/<pid> for QEMU
 * started directly, `virsh -c URI domstats DOMAIN` (LibvirtProvisioner.vmStats) for libvirt domains.
 */
export function vmLevelSource(vms: readonly AutoscaleVm[]): VmStatsSource {
  const byUri = new Map<string, LibvirtProvisioner>();
  const domains = new Map<string, { domain: string; virsh: LibvirtProvisioner }>();
  for (const v of vms) {
    if (v.stats.kind !== 'libvirt') continue;
    let p = byUri.get(v.stats.uri);
    // only its vmStats is used: no template, nothing defined; dir given so that no cache dir is made
    if (!p) byUri.set(v.stats.uri, (p = new LibvirtProvisioner({ template: '', uri: v.stats.uri, dir: tmpdir() })));
    domains.set(v.name, { domain: v.stats.domain, virsh: p });
  }
  const libvirt = {
    async vmStats(vm: Vm | string): Promise<VmStats> {
      const name = typeof vm === 'string' ? vm : vm.name;
      const d = domains.get(name);
      if (!d) throw new Error(`no VM-level stats source for ${name}`);
      // the engine knows the VM by its configured name, not the domain's
      return { ...(await d.virsh.vmStats(d.domain)), vm: name };
    },
  };
  const src = new ProcVmStats(libvirt);
  for (const v of vms) if (v.stats.kind === 'proc') src.add({ name: v.name, pid: v.stats.pid, vcpus: v.stats.vcpus, memMiB: v.stats.memMiB });
  return src;
}

// ---------------------------------------------------------------------------------------------
// Replicas

/** The spec of one replica of `container`: the configured minimal VM, `{container}` (and `{ip}`) filled in. */
export function replicaSpec(p: ReplicaProvisionerConfig, container: string, name: string, ip?: string): VmSpec {
  const fill = (t: string) => t.replaceAll('{container}', container).replaceAll('{ip}', ip ?? '');
  return {
    name,
    container,
    vcpus: p.vcpus,
    memMiB: p.memMiB,
    kernel: p.kernel,
    initrd: p.initrd,
    cmdline: fill(p.cmdline),
    disk: p.disk,
    ...(p.ready !== undefined ? { ready: p.ready === null ? null : fill(p.ready) } : {}),
  };
}

/**
 * Replica addresses from the config's list. The spec of a new replica takes the address of a paused
 * pooled replica of the same container when there is one (its guest still has it, and the pool only
 * resumes a VM whose spec matches), else the first address no replica of this run holds. A replica
 * holds its address while it exists (running or pooled); re-used for another spec it takes that one's.
 */
export class ReplicaAddresses {
  /** replica VM name → its address entry (as configured, e.g. "10.0.0.20/24") */
  private readonly byVm = new Map<string, string>();
  /** spec name → the entry specFor gave it, until acquire() tells which VM took it */
  private readonly bySpec = new Map<string, string>();

  constructor(readonly entries: readonly string[]) {}

  /** The address entry for the next replica of `container`; throws when every address is held. */
  forSpec(specName: string, container: string, pooled: readonly Vm[]): string {
    const paused = pooled.find((v) => v.state === 'paused' && v.spec.container === container && this.byVm.has(v.name));
    let entry = paused ? this.byVm.get(paused.name) : undefined;
    if (!entry) {
      const held = new Set(this.byVm.values());
      entry = this.entries.find((e) => !held.has(e));
    }
    if (!entry) throw new Error(`no free replica address: all ${this.entries.length} of provisioner.addresses are held by replicas of this run`);
    this.bySpec.set(specName, entry);
    return entry;
  }

  /** acquire() returned `vm` for the spec named `specName`. */
  taken(specName: string, vm: string): void {
    const e = this.bySpec.get(specName);
    this.bySpec.delete(specName);
    if (e) this.byVm.set(vm, e);
  }

  /** The address (without prefix) a replica holds, for the balancer. */
  address(vm: string): string | undefined {
    return this.byVm.get(vm)?.split('/')[0];
  }
}

/** The configured provisioner. `keepOnExit`: QEMU-direct replicas outlive this process. */
export function makeProvisioner(p: ReplicaProvisionerConfig, o: { keepOnExit: boolean }): Provisioner {
  if (p.dir) mkdirSync(p.dir, { recursive: true });
  if (p.kind === 'libvirt') return new LibvirtProvisioner({ template: p.template, uri: p.uri, ...(p.dir ? { dir: p.dir } : {}) });
  return new QemuDirectProvisioner({ template: p.template, keepOnExit: o.keepOnExit, ...(p.dir ? { dir: p.dir } : {}) });
}

export interface DryRunAction {
  /** ISO time */
  time: string;
  op: 'start' | 'release';
  vm: string;
  container: string;
  /** release: how the replica would go back to the pool */
  mode?: ReleaseMode;
}

/**
 * Stands in for a provisioner in a dry run: records what it would start or release and answers as if
 * it had (so the policy engine's replica counts follow its decisions, as they would for real). Starts
 * nothing, touches no file.
 */
export class DryRunProvisioner implements ReplicaProvisioner {
  readonly actions: DryRunAction[] = [];

  async acquire(spec: VmSpec): Promise<Acquired> {
    this.actions.push({ time: new Date().toISOString(), op: 'start', vm: spec.name, container: spec.container });
    return { vm: { name: spec.name, spec: { ...spec }, state: 'running', disk: '', serialLog: '' }, pooled: false, clone_ms: 0, boot_ms: 0 };
  }

  async release(vm: Vm, mode: ReleaseMode = 'pause'): Promise<void> {
    this.actions.push({ time: new Date().toISOString(), op: 'release', vm: vm.name, container: vm.spec.container, mode });
    vm.state = mode === 'pause' ? 'paused' : 'stopped';
  }
}

// ---------------------------------------------------------------------------------------------
// Load balancer

/** A balancer that registers nothing (replicas are started, nobody is told). */
export const NO_BALANCER: LoadBalancer = { addBackend: async () => {}, removeBackend: async () => {} };

/**
 * The user's load balancer, through a program: `HOOK add|remove SERVICE VM ADDRESS` (ADDRESS `-` when
 * the replica's address is not known). An exit status other than 0, a signal, or no exit within
 * `timeoutMs` (then the hook's process group is killed) is an error, which the Autoscaler reports as
 * action_failed. Its output is kept only for that error message.
 */
export class HookBalancer implements LoadBalancer {
  constructor(
    readonly hook: string,
    private readonly addressOf: (b: Backend) => string | undefined = () => undefined,
    private readonly timeoutMs = 30_000,
  ) {}

  addBackend(service: string, b: Backend): Promise<void> {
    return this.run('add', service, b);
  }

  removeBackend(service: string, b: Backend): Promise<void> {
    return this.run('remove', service, b);
  }

  private run(op: 'add' | 'remove', service: string, b: Backend): Promise<void> {
    const args = [op, service, b.vm, b.address ?? this.addressOf(b) ?? '-'];
    const what = `balancer hook \`${[this.hook, ...args].join(' ')}\``;
    return new Promise((resolve, reject) => {
      // its own process group: on timeout the hook and anything it started go (only what we started)
      const child = spawn(this.hook, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      let said = '';
      const keep = (d: Buffer) => (said = (said + d.toString('utf8')).slice(-2000));
      child.stdout!.on('data', keep);
      child.stderr!.on('data', keep);
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          /* gone already */
        }
      }, this.timeoutMs);
      child.once('error', (e) => {
        clearTimeout(timer);
        reject(new Error(`${what}: ${e.message}`));
      });
      // the exit status decides; a background child the hook left holding its output does not hold us
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        const done = () => {
          child.stdout!.destroy();
          child.stderr!.destroy();
          if (code === 0) return resolve();
          const why = timedOut ? `no exit within ${this.timeoutMs} ms` : code !== null ? `exit status ${code}` : `killed by ${signal}`;
          const tail = said.trim().split('\n').slice(-3).join(' / ');
          reject(new Error(`${what}: ${why}${tail ? `: ${tail}` : ''}`));
        };
        // let the last output arrive, briefly
        const t = setTimeout(done, 100);
        child.once('close', () => {
          clearTimeout(t);
          done();
        });
      });
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Container names from the disk

/**
 * Fills a VM's name map (the one its MonitorSampler uses) from its disk image. Names given in the
 * config win. refresh() re-reads the disk only when the image changed or an unknown Docker id appeared
 * (DockerDiskNames); reads never overlap; each distinct error is reported once.
 */
export class DiskNames {
  private readonly watch: DiskNamesWatch;

  constructor(image: string, names: Map<string, string>, explicit: ReadonlySet<string>, report: (e: Error) => void) {
    this.watch = new DiskNamesWatch(
      image,
      (m) => {
        for (const [id, info] of m) if (!explicit.has(id)) names.set(id, info.name);
      },
      report,
    );
  }

  refresh(ids?: string[]): Promise<void> {
    return this.watch.refresh(ids);
  }
}
