// libvirt provisioner: real libvirtd (Debian's libvirt 9.0), driven through virsh.
//
// Why virsh (through execa) and not the libvirt C API through koffi: every operation here is either rare
// (define, start, undefine: dominated by QEMU's own start, ~0.5 s) or once per monitoring interval
// (domstats: ~20-40 ms per virsh call, against a 1 s interval). virsh also gives the vocabulary and
// error messages operators know, and `domstats --raw` is a stable text format. The C API would save the
// process spawn but needs hand-written koffi bindings for virTypedParameter arrays
// (virConnectGetAllDomainStats) and careful ownership of libvirt objects; not worth it at 1 Hz.
//
// Domains: `type='qemu'` (TCG) unless KVM is a real hardware backend (runtime/accel.ts), direct kernel boot (<kernel>,
// <initrd>, <cmdline>), serial console to a file, guest RAM in a shared file the monitor can read
// (<memoryBacking><source type='file'/><access mode='shared'/>), QEMU running as root through a static
// DAC <seclabel> (so kernel/disk files under /root/.cache need no relabelling, and qemu.conf is left
// alone). Clone = dumpxml --inactive of the template domain, new name, no uuid (libvirt makes one), new
// MAC, new disk (qcow2 overlay on the template's disk, or a sparse copy) and serial path, vCPUs/memory
// and cmdline of the one container, define, start.

import { chooseAccel } from '../accel.ts';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { cacheDir } from '../cache.ts';
import { ToolError } from '../errors.ts';
import type { VmStats } from '../controller/types.ts';
import { cloneDisk, newMac, sleep, tool, waitForText } from './common.ts';
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
// Domain XML

export function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;').replace(/"/g, '&quot;');
}

function xmlUnescape(s: string): string {
  return s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&apos;/g, "'").replace(/&quot;/g, '"').replace(/&amp;/g, '&');
}

export interface TemplateDomain {
  name: string;
  /** qcow2 template disk */
  disk: string;
  kernel: string;
  initrd: string;
  cmdline: string;
  vcpus: number;
  memMiB: number;
  serialLog: string;
  /**
   * A NIC so clones get (and need) a new MAC. 'udp-loopback': a point-to-point UDP socket on 127.0.0.1
   * (no host interface, nothing leaves the host); real networks: a bridge inside a network namespace.
   */
  nic?: 'udp-loopback' | 'none';
}

/** The template's domain XML (what `defineTemplate` defines). */
export function templateXml(t: TemplateDomain): string {
  const nic =
    (t.nic ?? 'udp-loopback') === 'udp-loopback'
      ? `
    <interface type='udp'>
      <mac address='${newMac()}'/>
      <source address='127.0.0.1' port='1'>
        <local address='127.0.0.1' port='0'/>
      </source>
      <model type='virtio'/>
    </interface>`
      : '';
  return `<domain type='${chooseAccel().kind === 'kvm' ? 'kvm' : 'qemu'}'>
  <name>${xmlEscape(t.name)}</name>
  <memory unit='KiB'>${t.memMiB * 1024}</memory>
  <currentMemory unit='KiB'>${t.memMiB * 1024}</currentMemory>
  <memoryBacking>
    <source type='file'/>
    <access mode='shared'/>
  </memoryBacking>
  <vcpu placement='static'>${t.vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${xmlEscape(t.kernel)}</kernel>
    <initrd>${xmlEscape(t.initrd)}</initrd>
    <cmdline>${xmlEscape(t.cmdline)}</cmdline>
  </os>
  <cpu mode='custom' match='exact'>
    <model fallback='allow'>qemu64</model>
  </cpu>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='unsafe'/>
      <source file='${xmlEscape(t.disk)}'/>
      <target dev='vda' bus='virtio'/>
    </disk>${nic}
    <serial type='file'>
      <source path='${xmlEscape(t.serialLog)}' append='off'/>
      <target port='0'/>
    </serial>
    <memballoon model='virtio'>
      <stats period='1'/>
    </memballoon>
  </devices>
  <seclabel type='static' model='dac' relabel='no'>
    <label>+0:+0</label>
  </seclabel>
</domain>
`;
}

export interface DomainEdits {
  name?: string;
  dropUuid?: boolean;
  /** new MAC for every <mac address=.../> (one per NIC, in order; generated when too few) */
  macs?: string[];
  /** new path of the first file-backed disk; drops its <backingStore> (libvirt probes it again) */
  disk?: string;
  /** new path of the file-backed serial console (every occurrence: <serial> and its <console>) */
  serialLog?: string;
  vcpus?: number;
  memMiB?: number;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  /** new local/remote ports for UDP NICs */
  udpPorts?: { local: number; remote: number };
}

/** Edit libvirt's (normalised, `dumpxml` formatted) domain XML. Throws when an element is missing. */
export function editDomainXml(xml: string, e: DomainEdits): string {
  let x = xml;
  const must = (re: RegExp, what: string) => {
    if (!re.test(x)) throw new Error(`domain XML has no ${what}`);
  };
  if (e.name !== undefined) {
    must(/<name>[^<]*<\/name>/, '<name>');
    x = x.replace(/<name>[^<]*<\/name>/, `<name>${xmlEscape(e.name)}</name>`);
  }
  if (e.dropUuid) x = x.replace(/^[ \t]*<uuid>[^<]*<\/uuid>[ \t]*\r?\n?/m, '');
  if (e.macs !== undefined) {
    let i = 0;
    x = x.replace(/<mac address='[^']*'\/>/g, () => `<mac address='${e.macs![i++] ?? newMac()}'/>`);
  }
  if (e.disk !== undefined) {
    const re = /<disk type='file' device='disk'>[\s\S]*?<\/disk>/;
    must(re, "<disk type='file' device='disk'>");
    x = x.replace(re, (blk) => {
      let b = blk.replace(/<source file='[^']*'/, `<source file='${xmlEscape(e.disk!)}'`);
      b = b.replace(/\n?[ \t]*<backingStore\/>/g, '').replace(/\n?[ \t]*<backingStore[\s\S]*?<\/backingStore>/g, '');
      return b;
    });
  }
  if (e.serialLog !== undefined) {
    const m = /<serial type='file'>\s*<source path='([^']*)'/.exec(x);
    if (!m) throw new Error("domain XML has no <serial type='file'>");
    const old = m[1]!;
    x = x.split(`path='${old}'`).join(`path='${xmlEscape(e.serialLog)}'`);
  }
  if (e.vcpus !== undefined) {
    must(/<vcpu[^>]*>\d+<\/vcpu>/, '<vcpu>');
    x = x.replace(/<vcpu([^>]*)>\d+<\/vcpu>/, `<vcpu$1>${e.vcpus}</vcpu>`);
  }
  if (e.memMiB !== undefined) {
    must(/<memory[^>]*>\d+<\/memory>/, '<memory>');
    x = x.replace(/<memory[^>]*>\d+<\/memory>/, `<memory unit='KiB'>${e.memMiB * 1024}</memory>`);
    x = x.replace(/<currentMemory[^>]*>\d+<\/currentMemory>/, `<currentMemory unit='KiB'>${e.memMiB * 1024}</currentMemory>`);
  }
  for (const tag of ['kernel', 'initrd', 'cmdline'] as const) {
    const v = e[tag];
    if (v === undefined) continue;
    const re = new RegExp(`<${tag}>[^<]*</${tag}>`);
    must(re, `<${tag}>`);
    x = x.replace(re, `<${tag}>${xmlEscape(v)}</${tag}>`);
  }
  if (e.udpPorts) {
    x = x.replace(/<interface type='udp'>[\s\S]*?<\/interface>/g, (blk) =>
      blk
        .replace(/(<source address='[^']*' port=')\d+'/, `$1${e.udpPorts!.remote}'`)
        .replace(/(<local address='[^']*' port=')\d+'/, `$1${e.udpPorts!.local}'`),
    );
  }
  return x;
}

/** The first file-backed disk's path in a domain XML. */
export function domainDisk(xml: string): string {
  const m = /<disk type='file' device='disk'>[\s\S]*?<source file='([^']*)'/.exec(xml);
  if (!m) throw new Error("domain XML has no <disk type='file' device='disk'> with a source file");
  return xmlUnescape(m[1]!);
}

/** Parse `virsh domstats --raw` output (one domain) into VmStats. */
export function parseDomstats(text: string, vm: string, time: string): VmStats {
  const kv = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^\s*([\w.-]+)=(.*)$/.exec(line);
    if (m) kv.set(m[1]!, m[2]!);
  }
  const num = (k: string): number | undefined => (kv.has(k) ? Number(kv.get(k)) : undefined);
  const sum = (prefix: string, count: string, suffix: string) => {
    let s = 0;
    const n = num(count) ?? 0;
    for (let i = 0; i < n; i++) s += num(`${prefix}.${i}.${suffix}`) ?? 0;
    return s;
  };
  const currentKiB = num('balloon.current') ?? num('balloon.maximum') ?? 0;
  const avail = num('balloon.available');
  const unused = num('balloon.unused');
  const usedKiB = avail !== undefined && unused !== undefined ? avail - unused : (num('balloon.rss') ?? currentKiB);
  return {
    time,
    vm,
    vcpus: num('vcpu.current') ?? 1,
    cpu_time_ns: num('cpu.time') ?? 0,
    memory_used_bytes: usedKiB * 1024,
    memory_total_bytes: currentKiB * 1024,
    block_rd_bytes: sum('block', 'block.count', 'rd.bytes'),
    block_wr_bytes: sum('block', 'block.count', 'wr.bytes'),
    net_rx_bytes: sum('net', 'net.count', 'rx.bytes'),
    net_tx_bytes: sum('net', 'net.count', 'tx.bytes'),
  };
}

// ---------------------------------------------------------------------------------------------------
// The provisioner

export interface LibvirtOptions {
  /** the template domain (defined, inactive): its XML and its disk are what clones start from */
  template: string;
  uri?: string;
  /** where clones' disks, serial logs and XML go; default cacheDir('libvirt') */
  dir?: string;
  bootTimeoutMs?: number;
  /** first local UDP port for clones' loopback NICs (two per clone); default 40000 + pid % 1000 * 16 */
  udpPortBase?: number;
}

export class LibvirtProvisioner implements Provisioner {
  readonly kind = 'libvirt';
  private readonly uri: string;
  private readonly dir: string;
  private readonly vms = new Map<string, Vm>();
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

  async cloneFromTemplate(spec: VmSpec): Promise<{ vm: Vm; clone_ms: number }> {
    checkName(spec.name);
    if (this.vms.has(spec.name)) throw new Error(`domain ${spec.name} already managed`);
    const t0 = performance.now();
    const txml = await this.virsh('dumpxml', '--inactive', this.o.template);
    const templateDisk = domainDisk(txml);
    const disk = join(this.dir, `${spec.name}.qcow2`);
    const serialLog = join(this.dir, `${spec.name}.serial.log`);
    rmSync(disk, { force: true });
    await cloneDisk(templateDisk, disk, spec.disk);
    const local = this.nextPort;
    this.nextPort += 2;
    const xml = editDomainXml(txml, {
      name: spec.name,
      dropUuid: true,
      macs: [],
      disk,
      serialLog,
      vcpus: spec.vcpus,
      memMiB: spec.memMiB,
      kernel: spec.kernel,
      initrd: spec.initrd,
      cmdline: spec.cmdline,
      udpPorts: { local, remote: local + 1 },
    });
    const file = join(this.dir, `${spec.name}.xml`);
    writeFileSync(file, xml);
    try {
      await this.virsh('define', file);
    } catch (err) {
      rmSync(disk, { force: true });
      throw err;
    }
    const vm: Vm = { name: spec.name, spec: { ...spec }, state: 'defined', disk, serialLog };
    this.vms.set(spec.name, vm);
    return { vm, clone_ms: performance.now() - t0 };
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

  /** Hard power-off (`virsh destroy`): the minimal guest has no ACPI handling, and pooled VMs keep only their disk. */
  async stop(vm: Vm): Promise<void> {
    if (vm.state === 'running' || vm.state === 'paused') {
      await this.virsh('destroy', vm.name);
    }
    vm.state = 'stopped';
    vm.pid = undefined;
    vm.ramFile = undefined;
  }

  async destroy(vm: Vm): Promise<void> {
    if (vm.state === 'destroyed') return;
    const state = await this.domstate(vm.name).catch(() => 'gone');
    if (state === 'running' || state === 'paused') await this.virsh('destroy', vm.name);
    if (state !== 'gone') await this.virsh('undefine', vm.name);
    rmSync(vm.disk, { force: true });
    rmSync(vm.serialLog, { force: true });
    rmSync(join(this.dir, `${vm.name}.xml`), { force: true });
    vm.state = 'destroyed';
    vm.pid = undefined;
    this.vms.delete(vm.name);
    this.pool = this.pool.filter((v) => v !== vm);
  }

  async acquire(spec: VmSpec): Promise<Acquired> {
    const p = pickFromPool(this.pool, spec);
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
    for (const vm of [...this.vms.values()]) await this.destroy(vm);
    this.pool = [];
  }
}
