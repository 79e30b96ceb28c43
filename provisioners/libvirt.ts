// libvirt provisioner: real libvirtd (Debian's libvirt 9.0), driven through virsh.
//
// Why virsh (through execa) and not the libvirt C API through koffi: every operation here is either rare
// (define, start, undefine: dominated by QEMU's own start, ~0.5 s) or once per monitoring interval
// (domstats: ~20-40 ms per virsh call, against a 1 s interval). virsh also gives the vocabulary and
// error messages operators know, and `domstats --raw` is a stable text format. The C API would save the
// process spawn but needs hand-written koffi bindings for virTypedParameter arrays
// (virConnectGetAllDomainStats) and careful ownership of libvirt objects; not worth it at 1 Hz.
//
// Domains (XML in libvirt-xml.ts): `type='qemu'` (TCG) unless KVM is a real hardware backend
// (common/accel.ts), direct kernel boot (<kernel>, <initrd>, <cmdline>), serial console to a file, a
// second UART backed by a unix socket as the control channel (guest-channel.ts; `exec(vm, script)`),
// guest RAM in a shared file the monitor can read (<memoryBacking><source type='file'/><access
// mode='shared'/>), QEMU running as root through a static DAC <seclabel> (so kernel/disk files under
// /root/.cache need no relabelling, and qemu.conf is left alone). Clone = dumpxml --inactive of the
// template domain, new name, no uuid (libvirt makes one), new MAC, new disk (qcow2 overlay on the
// template's disk, or a sparse copy), serial log and control socket, vCPUs/memory and cmdline of the one
// container, define, start.
//
// Warm start (libvirt-warm.ts): a booted warm-mode minimal VM is saved once with `virsh save`; each new
// VM is a new domain (own name, UUID, MAC, overlay disk, serial log, control socket) restored from that
// image under its own XML, then its identity is fixed up over the control channel like QEMU-direct's.

import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { cacheDir } from '../common/cache.ts';
import { ToolError } from '../common/errors.ts';
import type { VmStats } from '../controller/types.ts';
import { cloneDisk, newMac, sleep, tool, waitForText } from './common.ts';
import { GuestChannel, type ExecResult } from './guest-channel.ts';
import { domainDisk, editDomainXml, parseDomstats, templateXml, type TemplateDomain } from './libvirt-xml.ts';
import { restoreDomain, saveDomain, type WarmStarted } from './libvirt-warm.ts';
import type { WarmIdentity, WarmImage } from './warm-identity.ts';
import { checkName, pickFromPool, readyLine, type Acquired, type Provisioner, type ReleaseMode, type Vm, type VmSpec } from './provisioner.ts';

export const DEFAULT_URI = 'qemu:///system';

// ---------------------------------------------------------------------------------------------------
// The daemons

function processState(pid: number): string | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3);
  } catch {
    return null;
  }
}

/** A live (not zombie) process whose comm is `name`. */
function runningAs(pid: number, name: string): boolean {
  const st = processState(pid);
  if (st === null || st === 'Z' || st === 'X') return false;
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === name;
  } catch {
    return false;
  }
}

function pidFromFile(file: string): number | null {
  try {
    const n = Number(readFileSync(file, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

/**
 * Starts `virtlogd -d` and `libvirtd -d` when they are not running (Debian's package does not start
 * them here; no --listen: the unix socket is enough and --listen needs TLS certificates), and stops
 * exactly what it started, by PID.
 */
export class LibvirtDaemon {
  private constructor(
    readonly uri: string,
    /** PIDs of the daemons this helper started (stop() ends only these) */
    readonly started: { virtlogd?: number; libvirtd?: number },
  ) {}

  static async ensure(opts: { uri?: string; timeoutMs?: number } = {}): Promise<LibvirtDaemon> {
    const uri = opts.uri ?? DEFAULT_URI;
    const started: { virtlogd?: number; libvirtd?: number } = {};
    const running = (name: 'virtlogd' | 'libvirtd') => {
      const pid = pidFromFile(`/run/${name}.pid`);
      return pid !== null && runningAs(pid, name) ? pid : null;
    };
    for (const name of ['virtlogd', 'libvirtd'] as const) {
      if (running(name) !== null) continue;
      try {
        await execa(name, ['-d']);
      } catch (err) {
        throw new ToolError(name, `could not start (${(err as Error).message}); apt-get install -y libvirt-daemon-system libvirt-clients`);
      }
      const deadline = performance.now() + 10_000;
      let pid: number | null = null;
      while ((pid = running(name)) === null) {
        if (performance.now() > deadline) throw new ToolError(name, `started but /run/${name}.pid shows no live ${name}`);
        await sleep(50);
      }
      started[name] = pid;
    }
    const d = new LibvirtDaemon(uri, started);
    // the socket answers once libvirtd is ready (first start probes QEMU capabilities: a few seconds)
    const deadline = performance.now() + (opts.timeoutMs ?? 60_000);
    for (;;) {
      try {
        await execa('virsh', ['-c', uri, 'uri']);
        return d;
      } catch (err) {
        if (performance.now() > deadline) throw new ToolError('virsh', `libvirtd at ${uri} does not answer: ${(err as Error).message}`);
        await sleep(100);
      }
    }
  }

  /** Stop the daemons this helper started (libvirtd first), by PID; waits for them to exit. */
  async stop(): Promise<void> {
    for (const name of ['libvirtd', 'virtlogd'] as const) {
      const pid = this.started[name];
      if (pid === undefined || !runningAs(pid, name)) continue;
      process.kill(pid, 'SIGTERM');
      const deadline = performance.now() + 10_000;
      while (runningAs(pid, name)) {
        if (performance.now() > deadline) {
          process.kill(pid, 'SIGKILL');
          break;
        }
        await sleep(50);
      }
      delete this.started[name];
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// The provisioner

export interface LibvirtOptions {
  /** the template domain (defined, inactive): its XML and its disk are what clones start from */
  template: string;
  uri?: string;
  /** where clones' disks, serial logs, control sockets and XML go; default cacheDir('libvirt') */
  dir?: string;
  bootTimeoutMs?: number;
  /** first local UDP port for clones' loopback NICs (two per clone); default 40000 + pid % 1000 * 16 */
  udpPortBase?: number;
  /**
   * Warm start in acquire(): when no paused pooled VM fits, a new domain is restored from this `virsh
   * save` image (warmStart) rather than booted. identity(spec) gives its address/containers; undefined
   * for a spec means: boot it cold.
   */
  warm?: { image: WarmImage; identity: (spec: VmSpec) => WarmIdentity | undefined };
  /** how a warm clone's save image is made (libvirt-warm.ts): 'pipe' (default, a FIFO) or 'copy' (a file) */
  warmImageMode?: 'pipe' | 'copy';
}

export interface DomainRec {
  vm: Vm;
  /** the MAC this provisioner gave the domain's NIC */
  mac: string;
  /** unix socket of the control channel (ttyS1) */
  ctlPath: string;
  channel?: GuestChannel;
}

/** @internal what libvirt-warm.ts uses of the provisioner */
export interface LibvirtInternals {
  options: LibvirtOptions;
  dir: string;
  newRec(spec: VmSpec): DomainRec & { udp: { local: number; remote: number } };
  define(r: DomainRec, xml: string): Promise<void>;
  refresh(vm: Vm): Promise<void>;
  down(vm: Vm): void;
  rec(vm: Vm): DomainRec;
}

export class LibvirtProvisioner implements Provisioner {
  readonly kind = 'libvirt';
  private readonly uri: string;
  private readonly dir: string;
  private readonly recs = new Map<string, DomainRec>();
  private pool: Vm[] = [];
  private nextPort: number;

  constructor(private readonly o: LibvirtOptions) {
    this.uri = o.uri ?? DEFAULT_URI;
    this.dir = o.dir ?? cacheDir('libvirt');
    this.nextPort = o.udpPortBase ?? 40000 + (process.pid % 1000) * 16;
  }

  /** virsh -c <uri> ... */
  virsh(...args: string[]): Promise<string> {
    return tool('virsh', ['-c', this.uri, ...args]);
  }

  /** Define (or redefine) the template domain. */
  static async defineTemplate(t: TemplateDomain, uri = DEFAULT_URI, dir = cacheDir('libvirt')): Promise<void> {
    checkName(t.name);
    const file = join(dir, `${t.name}.xml`);
    writeFileSync(file, templateXml(t));
    await tool('virsh', ['-c', uri, 'define', file]);
  }

  pooled(): readonly Vm[] {
    return this.pool;
  }

  async domstate(name: string): Promise<string> {
    return (await this.virsh('domstate', name)).trim();
  }

  private rec(vm: Vm): DomainRec {
    const r = this.recs.get(vm.name);
    if (!r) throw new Error(`domain ${vm.name} is not managed by this provisioner`);
    return r;
  }

  /** A new domain's record and paths (disk, serial log, control socket, MAC, UDP ports). */
  private newRec(spec: VmSpec): DomainRec & { udp: { local: number; remote: number } } {
    checkName(spec.name);
    if (this.recs.has(spec.name)) throw new Error(`domain ${spec.name} already managed`);
    const local = this.nextPort;
    this.nextPort += 2;
    const vm: Vm = { name: spec.name, spec: { ...spec }, state: 'defined', disk: join(this.dir, `${spec.name}.qcow2`), serialLog: join(this.dir, `${spec.name}.serial.log`) };
    return { vm, mac: newMac(), ctlPath: join(this.dir, `${spec.name}.ctl`), udp: { local, remote: local + 1 } };
  }

  /** Define `xml` as the domain of `r` (after its disk was made); registers it. */
  private async define(r: DomainRec, xml: string): Promise<void> {
    const file = join(this.dir, `${r.vm.name}.xml`);
    writeFileSync(file, xml);
    try {
      await this.virsh('define', file);
    } catch (err) {
      rmSync(r.vm.disk, { force: true });
      rmSync(file, { force: true });
      throw err;
    }
    this.recs.set(r.vm.name, { vm: r.vm, mac: r.mac, ctlPath: r.ctlPath });
  }

  async cloneFromTemplate(spec: VmSpec): Promise<{ vm: Vm; clone_ms: number }> {
    const r = this.newRec(spec);
    const t0 = performance.now();
    const txml = await this.virsh('dumpxml', '--inactive', this.o.template);
    rmSync(r.vm.disk, { force: true });
    await cloneDisk(domainDisk(txml), r.vm.disk, spec.disk);
    const xml = editDomainXml(txml, {
      name: spec.name,
      dropUuid: true,
      macs: [r.mac],
      disk: r.vm.disk,
      serialLog: r.vm.serialLog,
      ctlSocket: r.ctlPath,
      vcpus: spec.vcpus,
      memMiB: spec.memMiB,
      kernel: spec.kernel,
      initrd: spec.initrd,
      cmdline: spec.cmdline,
      udpPorts: r.udp,
    });
    await this.define(r, xml);
    return { vm: r.vm, clone_ms: performance.now() - t0 };
  }

  private async info(vm: Vm): Promise<void> {
    vm.pid = pidFromFile(`/run/libvirt/qemu/${vm.name}.pid`) ?? undefined;
    const ramRoot = '/var/lib/libvirt/qemu/ram';
    vm.ramFile = undefined;
    if (existsSync(ramRoot)) {
      const d = readdirSync(ramRoot).find((n) => n.endsWith(`-${vm.name}`));
      if (d && existsSync(join(ramRoot, d, 'pc.ram'))) vm.ramFile = join(ramRoot, d, 'pc.ram');
    }
  }

  async start(vm: Vm): Promise<{ boot_ms: number }> {
    const t0 = performance.now();
    if (vm.state === 'paused') {
      await this.virsh('resume', vm.name);
      vm.state = 'running';
      return { boot_ms: performance.now() - t0 };
    }
    if (vm.state === 'running') throw new Error(`domain ${vm.name} is already running`);
    if (vm.state === 'destroyed') throw new Error(`domain ${vm.name} was undefined`);
    rmSync(vm.serialLog, { force: true });
    rmSync(this.rec(vm).ctlPath, { force: true });
    await this.virsh('start', vm.name);
    vm.state = 'running';
    await this.info(vm);
    const ready = readyLine(vm.spec);
    if (ready !== null) {
      let lastCheck = 0;
      let lastAlive = true;
      const alive = async () => {
        // domstate costs a virsh call: once a second is enough
        if (performance.now() - lastCheck > 1000) {
          lastCheck = performance.now();
          lastAlive = (await this.domstate(vm.name).catch(() => 'unknown')) === 'running';
        }
        return lastAlive;
      };
      try {
        await waitForText(vm.serialLog, ready, { timeoutMs: this.o.bootTimeoutMs ?? 90_000, alive });
      } catch (err) {
        await this.virsh('destroy', vm.name).catch(() => {});
        vm.state = 'stopped';
        throw err;
      }
    }
    return { boot_ms: performance.now() - t0 };
  }

  /** The domain is off: forget its process and control channel. */
  private down(vm: Vm): void {
    const r = this.recs.get(vm.name);
    r?.channel?.close();
    if (r) {
      r.channel = undefined;
      rmSync(r.ctlPath, { force: true });
    }
    vm.pid = undefined;
    vm.ramFile = undefined;
  }

  /** Hard power-off (`virsh destroy`): the minimal guest has no ACPI handling, and pooled VMs keep only their disk. */
  async stop(vm: Vm): Promise<void> {
    if (vm.state === 'running' || vm.state === 'paused') {
      await this.virsh('destroy', vm.name);
    }
    vm.state = 'stopped';
    this.down(vm);
  }

  async destroy(vm: Vm): Promise<void> {
    if (vm.state === 'destroyed') return;
    const state = await this.domstate(vm.name).catch(() => 'gone');
    if (state === 'running' || state === 'paused') await this.virsh('destroy', vm.name);
    if (state !== 'gone') {
      await this.virsh('undefine', vm.name).catch(async (err) => {
        // a transient domain (never defined) is gone once destroyed
        if ((await this.domstate(vm.name).catch(() => 'gone')) !== 'gone') throw err;
      });
    }
    this.down(vm);
    rmSync(vm.disk, { force: true });
    rmSync(vm.serialLog, { force: true });
    rmSync(join(this.dir, `${vm.name}.xml`), { force: true });
    vm.state = 'destroyed';
    this.recs.delete(vm.name);
    this.pool = this.pool.filter((v) => v !== vm);
  }

  async acquire(spec: VmSpec): Promise<Acquired & { warm?: boolean }> {
    const p = pickFromPool(this.pool, spec);
    const id = this.o.warm && (!p || p.state !== 'paused') ? this.o.warm.identity(spec) : undefined;
    if (id && this.o.warm) {
      const { restore_ms: _r, fixup_ms: _f, image_ms: _i, ...a } = await this.warmStart(spec, this.o.warm.image, id);
      return { ...a, warm: true };
    }
    if (p) {
      this.pool = this.pool.filter((v) => v !== p);
      const reuse = p.state === 'paused' ? 'resume' : 'boot';
      if (reuse === 'boot' && (p.spec.cmdline !== spec.cmdline || p.spec.vcpus !== spec.vcpus || p.spec.memMiB !== spec.memMiB)) {
        // re-spec the stopped domain for the new container: redefine with its cmdline and size
        const xml = editDomainXml(await this.virsh('dumpxml', '--inactive', p.name), {
          vcpus: spec.vcpus,
          memMiB: spec.memMiB,
          cmdline: spec.cmdline,
        });
        const file = join(this.dir, `${p.name}.xml`);
        writeFileSync(file, xml);
        await this.virsh('define', file);
      }
      if (reuse === 'boot') p.spec = { ...spec, name: p.name };
      const { boot_ms } = await this.start(p);
      return { vm: p, pooled: true, reuse, clone_ms: 0, boot_ms };
    }
    const { vm, clone_ms } = await this.cloneFromTemplate(spec);
    try {
      const { boot_ms } = await this.start(vm);
      return { vm, pooled: false, clone_ms, boot_ms };
    } catch (err) {
      await this.destroy(vm).catch(() => {});
      throw err;
    }
  }

  async release(vm: Vm, mode: ReleaseMode = 'pause'): Promise<void> {
    if (mode === 'pause' && vm.state === 'running') {
      await this.virsh('suspend', vm.name);
      vm.state = 'paused';
    } else if (vm.state === 'running' || vm.state === 'paused') {
      await this.stop(vm);
    }
    if (!this.pool.includes(vm)) this.pool.push(vm);
  }

  /** VM-level stats from `virsh domstats --raw` (cpu.time, balloon, vcpu, block, net). */
  async vmStats(vm: Vm | string): Promise<VmStats> {
    const name = typeof vm === 'string' ? vm : vm.name;
    const t0 = Date.now();
    const out = await this.virsh('domstats', '--raw', '--cpu-total', '--balloon', '--vcpu', '--block', '--interface', name);
    const t1 = Date.now();
    // the counters were read somewhere inside the call: stamp the midpoint
    return parseDomstats(out, name, new Date(Math.round((t0 + t1) / 2)).toISOString());
  }

  async close(): Promise<void> {
    for (const r of [...this.recs.values()]) await this.destroy(r.vm);
    this.pool = [];
  }

  /** The MAC this provisioner gave the domain's NIC (in its XML). */
  macOf(vm: Vm): string {
    return this.rec(vm).mac;
  }

  /** The control channel of a running domain (connected on first use; waits for the guest's loop). */
  async channel(vm: Vm, timeoutMs = 30_000): Promise<GuestChannel> {
    const r = this.rec(vm);
    if (vm.state !== 'running') throw new Error(`domain ${vm.name} is not running`);
    return GuestChannel.reuseOrOpen(r, timeoutMs);
  }

  /** Run a shell script inside the guest over the control channel. */
  async exec(vm: Vm, script: string, timeoutMs = 30_000): Promise<ExecResult> {
    return (await this.channel(vm, timeoutMs)).exec(script, timeoutMs);
  }

  /**
   * Save a running domain's memory and device state to `file` (`virsh save`; libvirt stops the domain,
   * it stays defined). Returns the image to restore clones from (checked by readSaveImage).
   */
  saveWarmImage(vm: Vm, file: string): Promise<{ image: WarmImage; save_ms: number; bytes: number }> {
    return saveDomain(this, vm, file);
  }

  /**
   * Make a warm image: boot `spec` (a warm-mode guest, e.g. the test guest's cmdline with `warm: true`,
   * ready `CIEL-WARM-READY`, and a template whose NIC the guest drives), save it to `file`, destroy it.
   */
  async prepareWarmImage(spec: VmSpec, file: string): Promise<{ image: WarmImage; boot_ms: number; save_ms: number; bytes: number }> {
    const { vm, clone_ms } = await this.cloneFromTemplate(spec);
    try {
      const { boot_ms } = await this.start(vm);
      const saved = await this.saveWarmImage(vm, file);
      return { ...saved, boot_ms: boot_ms + clone_ms };
    } finally {
      await this.destroy(vm);
    }
  }

  /**
   * A new domain restored from a warm image (libvirt-warm.ts restoreDomain): its own name, UUID, MAC,
   * overlay disk, serial log and control socket, its identity fixed up over the control channel.
   * clone_ms: image check, disk, define, making the clone's image (image_ms); boot_ms: restore + fix-up.
   */
  warmStart(spec: VmSpec, image: WarmImage, identity: WarmIdentity = {}): Promise<WarmStarted> {
    return restoreDomain(this, spec, image, identity);
  }

  /** @internal the steps libvirt-warm.ts makes and registers domains with */
  get internals(): LibvirtInternals {
    return {
      options: this.o,
      dir: this.dir,
      newRec: (spec) => this.newRec(spec),
      define: (r, xml) => this.define(r, xml),
      refresh: (vm) => this.info(vm),
      down: (vm) => this.down(vm),
      rec: (vm) => this.rec(vm),
    };
  }
}
