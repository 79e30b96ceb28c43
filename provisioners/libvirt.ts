// libvirt provisioner: real libvirtd (Debian's libvirt 9.0), driven through virsh. This file holds the
// VM primitives (LibvirtVms, a VmBackend); the pool and the warm-start flow over them are pool.ts's, the
// daemons libvirt-daemon.ts's, the XML libvirt-xml.ts's, the save images libvirt-warm.ts's.
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
// image under its own XML; pool.ts then fixes up its identity over the control channel.

import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cacheDir } from '../common/cache.ts';
import { readDomstats } from '../vmstats/libvirt-domstats.ts';
import type { VmStats } from '../vmstats/vm-stats.ts';
import { cloneDisk } from './disk-clone.ts';
import { ProvisionError } from './errors.ts';
import { GuestChannel } from './guest-channel.ts';
import { tool } from './host-tool.ts';
import { DEFAULT_URI, pidFromFile } from './libvirt-daemon.ts';
import { readSaveImage, restoreFromImage } from './libvirt-warm.ts';
import { domainDisk, editDomainXml, templateXml, type TemplateDomain } from './libvirt-xml.ts';
import { newMac } from './mac.ts';
import { VmPool, type PoolOptions } from './pool.ts';
import { checkName, readyLine, type Vm, type VmSpec } from './provisioner.ts';
import { waitForText } from './serial-log.ts';
import { LibvirtRecovery } from './libvirt-recovery.ts';
import type { BackendRecovery, RestoredVm, SavedImage, VmBackend } from './vm-backend.ts';
import type { WarmImage } from './warm-identity.ts';

export interface LibvirtOptions extends PoolOptions {
  /** the template domain (defined, inactive): its XML and its disk are what clones start from */
  template: string;
  uri?: string;
  /** where clones' disks, serial logs, control sockets and XML go; default cacheDir('libvirt') */
  dir?: string;
  bootTimeoutMs?: number;
  /** first local UDP port for clones' loopback NICs (two per clone); default 40000 + pid % 1000 * 16 */
  udpPortBase?: number;
  /** how a warm clone's save image is made (libvirt-warm.ts): 'pipe' (default, a FIFO) or 'copy' (a file) */
  warmImageMode?: 'pipe' | 'copy';
}

interface DomainRec {
  vm: Vm;
  /** the MAC this provisioner gave the domain's NIC */
  mac: string;
  /** unix socket of the control channel (ttyS1) */
  ctlPath: string;
  channel?: GuestChannel;
}

/** The VM primitives over libvirt domains. */
export class LibvirtVms implements VmBackend {
  readonly kind = 'libvirt';
  private readonly uri: string;
  private readonly dir: string;
  private readonly recs = new Map<string, DomainRec>();
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

  async domstate(name: string): Promise<string> {
    return (await this.virsh('domstate', name)).trim();
  }

  private rec(vm: Vm): DomainRec {
    const r = this.recs.get(vm.name);
    if (!r) throw new ProvisionError(vm.name, 'lookup', `domain ${vm.name} is not managed by this provisioner`);
    return r;
  }

  check(vm: Vm): void {
    this.rec(vm);
  }

  vms(): Vm[] {
    return [...this.recs.values()].map((r) => r.vm);
  }

  get recovery(): BackendRecovery {
    return new LibvirtRecovery({
      uri: this.uri,
      dir: this.dir,
      virsh: (...a) => this.virsh(...a),
      take: (vm, state, mac) => this.take(vm, state, mac),
      known: (name) => this.recs.get(name)?.vm,
      destroy: (vm) => this.destroy(vm),
    });
  }

  /** Track a domain an earlier process defined (found by recovery.adopt), with its process and RAM file. */
  private take(vm: Vm, state: 'running' | 'paused', mac: string | undefined): void {
    if (this.recs.has(vm.name)) throw new ProvisionError(vm.name, 'adopt', `domain ${vm.name} is already managed by this provisioner`);
    vm.state = state;
    // where define() put them (an earlier process's record may be older than its disk)
    vm.disk = join(this.dir, `${vm.name}.qcow2`);
    vm.serialLog = join(this.dir, `${vm.name}.serial.log`);
    this.refresh(vm);
    this.recs.set(vm.name, { vm, mac: mac ?? newMac(), ctlPath: join(this.dir, `${vm.name}.ctl`) });
  }

  /** A new domain's record and paths (disk, serial log, control socket, MAC, UDP ports). */
  private newRec(spec: VmSpec): DomainRec & { udp: { local: number; remote: number } } {
    checkName(spec.name);
    if (this.recs.has(spec.name)) throw new ProvisionError(spec.name, 'define', `domain ${spec.name} already managed`);
    const local = this.nextPort;
    this.nextPort += 2;
    const vm: Vm = { name: spec.name, spec: { ...spec }, state: 'defined', disk: join(this.dir, `${spec.name}.qcow2`), serialLog: join(this.dir, `${spec.name}.serial.log`) };
    return { vm, mac: newMac(), ctlPath: join(this.dir, `${spec.name}.ctl`), udp: { local, remote: local + 1 } };
  }

  /** Define `xml` as the domain of `r` (after its disk was made); registers it. */
  private async register(r: DomainRec, xml: string): Promise<void> {
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

  async define(spec: VmSpec): Promise<{ vm: Vm; clone_ms: number }> {
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
    await this.register(r, xml);
    return { vm: r.vm, clone_ms: performance.now() - t0 };
  }

  /** The running domain's QEMU pid and guest-RAM file (what the stats reader and the monitor need). */
  private refresh(vm: Vm): void {
    vm.pid = pidFromFile(`/run/libvirt/qemu/${vm.name}.pid`) ?? undefined;
    const ramRoot = '/var/lib/libvirt/qemu/ram';
    vm.ramFile = undefined;
    if (existsSync(ramRoot)) {
      const d = readdirSync(ramRoot).find((n) => n.endsWith(`-${vm.name}`));
      if (d && existsSync(join(ramRoot, d, 'pc.ram'))) vm.ramFile = join(ramRoot, d, 'pc.ram');
    }
  }

  async boot(vm: Vm): Promise<void> {
    if (vm.state === 'running') throw new ProvisionError(vm.name, 'boot', `domain ${vm.name} is already running`);
    if (vm.state === 'destroyed') throw new ProvisionError(vm.name, 'boot', `domain ${vm.name} was undefined`);
    rmSync(vm.serialLog, { force: true });
    rmSync(this.rec(vm).ctlPath, { force: true });
    await this.virsh('start', vm.name);
    vm.state = 'running';
    this.refresh(vm);
    const ready = readyLine(vm.spec);
    if (ready === null) return;
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
      await waitForText(vm.serialLog, ready, { timeoutMs: this.o.bootTimeoutMs ?? 90_000, alive, vm: vm.name });
    } catch (err) {
      await this.virsh('destroy', vm.name).catch(() => {});
      vm.state = 'stopped';
      throw err;
    }
  }

  async pause(vm: Vm): Promise<void> {
    await this.virsh('suspend', vm.name);
    vm.state = 'paused';
  }

  async resume(vm: Vm): Promise<void> {
    await this.virsh('resume', vm.name);
    vm.state = 'running';
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
  }

  /**
   * Redefine the domain with spec's cmdline and size when they differ (`virsh define` of a running
   * domain changes only its next boot).
   */
  async respec(vm: Vm, spec: VmSpec): Promise<void> {
    this.rec(vm);
    if (vm.spec.cmdline !== spec.cmdline || vm.spec.vcpus !== spec.vcpus || vm.spec.memMiB !== spec.memMiB) {
      const xml = editDomainXml(await this.virsh('dumpxml', '--inactive', vm.name), {
        vcpus: spec.vcpus,
        memMiB: spec.memMiB,
        cmdline: spec.cmdline,
      });
      const file = join(this.dir, `${vm.name}.xml`);
      writeFileSync(file, xml);
      await this.virsh('define', file);
    }
    vm.spec = { ...spec, name: vm.name };
  }

  /** VM-level stats from `virsh domstats --raw` (vmstats/libvirt-domstats.ts); any domain, by name. */
  vmStats(vm: Vm | string): Promise<VmStats> {
    return readDomstats((...a) => this.virsh(...a), typeof vm === 'string' ? vm : vm.name);
  }

  macOf(vm: Vm): string {
    return this.rec(vm).mac;
  }

  async channel(vm: Vm, timeoutMs: number): Promise<GuestChannel> {
    const r = this.rec(vm);
    if (vm.state !== 'running') throw new ProvisionError(vm.name, 'channel', `domain ${vm.name} is not running`);
    return GuestChannel.reuseOrOpen(r, timeoutMs);
  }

  /** `virsh save` a running domain to `file` (libvirt stops it; it stays defined), checked by readSaveImage. */
  async saveImage(vm: Vm, file: string): Promise<SavedImage> {
    this.rec(vm);
    if (vm.state !== 'running') throw new ProvisionError(vm.name, 'save', `domain ${vm.name} is not running`);
    rmSync(file, { force: true });
    const t0 = performance.now();
    await this.virsh('save', vm.name, file);
    const save_ms = performance.now() - t0;
    vm.state = 'stopped';
    this.down(vm);
    const img = readSaveImage(file);
    return { image: { file, spec: { ...vm.spec } }, save_ms, bytes: img.size };
  }

  /**
   * A new domain restored from `image`: own name, UUID, MAC, overlay disk on the template's disk (the
   * warm guest never mounts its disk), serial log, control socket and UDP ports; defined with that XML
   * (so it is persistent), restored from a per-clone image carrying the same XML (libvirt-warm.ts).
   * A bad image is refused before anything is made; a failed restore undefines the domain.
   * clone_ms: image check, disk, define, making the clone's image (image_ms).
   */
  async restore(spec: VmSpec, image: WarmImage): Promise<RestoredVm & { image_ms: number }> {
    const s = image.spec;
    // the machine must match the saved one; name, disk strategy and container are the new VM's
    const r = this.newRec({ ...spec, vcpus: s.vcpus, memMiB: s.memMiB, kernel: s.kernel, initrd: s.initrd, cmdline: s.cmdline, ready: null });
    const { vm } = r;
    const t0 = performance.now();
    const img = readSaveImage(image.file);
    const xml = editDomainXml(img.xml, {
      name: vm.name,
      uuid: randomUUID(),
      macs: [r.mac],
      disk: vm.disk,
      serialLog: vm.serialLog,
      ctlSocket: r.ctlPath,
      udpPorts: r.udp,
    });
    rmSync(vm.disk, { force: true });
    await cloneDisk(domainDisk(await this.virsh('dumpxml', '--inactive', this.o.template)), vm.disk, spec.disk);
    await this.register(r, xml);
    try {
      rmSync(vm.serialLog, { force: true });
      rmSync(r.ctlPath, { force: true });
      const made = await restoreFromImage({
        virsh: (...a) => this.virsh(...a),
        img,
        xml,
        path: join(this.dir, `${vm.name}.restore`),
        mode: this.o.warmImageMode ?? 'pipe',
      });
      vm.state = 'running';
      this.refresh(vm);
      return { vm, clone_ms: performance.now() - t0 - made.restore_ms, restore_ms: made.restore_ms, image_ms: made.image_ms };
    } catch (err) {
      await this.destroy(vm).catch(() => {});
      throw err;
    }
  }
}

/** The libvirt provisioner: the pool (pool.ts) over libvirt domains. */
/**
 * Before anything depends on it: the template domain answers at `uri` (libvirtd running, domain defined).
 * A config naming a template that is not there fails at start, not at the first scale-out.
 */
export async function checkTemplateDomain(template: string, uri = DEFAULT_URI): Promise<void> {
  try {
    await tool('virsh', ['-c', uri, 'dominfo', template]);
  } catch (e) {
    const why = ((e as Error).message.split('\n').find((l) => /error:/.test(l) && !/^error: failed to get domain/.test(l.trim())) ?? (e as Error).message)
      .replace(/^.*?error:\s*/, '')
      .trim();
    throw new ProvisionError(template, 'preflight', `libvirt template domain ${template} at ${uri} is not usable: ${why}`);
  }
}

export class LibvirtProvisioner extends VmPool<LibvirtVms> {
  constructor(o: LibvirtOptions) {
    super(new LibvirtVms(o), o);
  }

  /** Define (or redefine) the template domain. */
  static async defineTemplate(t: TemplateDomain, uri = DEFAULT_URI, dir = cacheDir('libvirt')): Promise<void> {
    checkName(t.name);
    const file = join(dir, `${t.name}.xml`);
    writeFileSync(file, templateXml(t));
    await tool('virsh', ['-c', uri, 'define', file]);
  }

  /** virsh -c <uri> ... */
  virsh(...args: string[]): Promise<string> {
    return this.backend.virsh(...args);
  }

  domstate(name: string): Promise<string> {
    return this.backend.domstate(name);
  }
}
