// QEMU-direct provisioner: one QEMU process per VM, qcow2 overlays (or sparse copies) of a template
// disk, no daemon. The embedded default. Pause/resume and block stats go through QMP (runtime/qmp.ts);
// CPU time and memory come from /proc/<qemu pid> (the whole QEMU process, as libvirt's cpu.time counts
// the VM's cgroup).
//
// Guest RAM is a shared file (memory-backend-file,share=on) in /dev/shm by default, so the monitor can
// read it while the VM runs (file offset = guest-physical address for guests <= 3583 MiB on `pc`).

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { cacheDir } from '../cache.ts';
import { ToolError } from '../errors.ts';
import { QmpClient } from '../qmp.ts';
import type { VmStats } from '../controller/types.ts';
import { clockTicks, cloneDisk, newMac, sleep, waitForText } from './common.ts';
import { checkName, pickFromPool, readyLine, type Acquired, type Provisioner, type ReleaseMode, type Vm, type VmSpec } from './provisioner.ts';

export interface QemuDirectOptions {
  /** qcow2 template disk */
  template: string;
  /** where clones' disks, serial logs and QMP sockets go; default cacheDir('qemu-direct') */
  dir?: string;
  qemu?: string;
  /** default 'tcg,thread=multi' (this machine kind has no usable KVM, see DESIGN.md) */
  accel?: string;
  /** default 'qemu64' */
  cpu?: string;
  /** wait for the ready line at most this long; default 90 000 ms */
  bootTimeoutMs?: number;
  /** directory for the shared guest-RAM files; default /dev/shm; null: anonymous RAM (not readable) */
  ramDir?: string | null;
  /** extra QEMU arguments per VM, e.g. a tap NIC on a bridge inside a network namespace */
  extraArgs?: (vm: Vm, mac: string) => string[];
  /** command prefix for QEMU, e.g. ['ip', 'netns', 'exec', 'ciel-test'] (must exec, keeping the PID) */
  wrapper?: string[];
  /**
   * Network counters of a VM's NIC from the guest's point of view (e.g. its tap's statistics with rx/tx
   * swapped); without it vmStats reports 0 (QMP has no NIC counters).
   */
  netStats?: (vm: Vm) => Promise<{ rx_bytes: number; tx_bytes: number }>;
}

interface Rec {
  vm: Vm;
  mac: string;
  qmpPath: string;
  child?: ChildProcess;
  exited?: Promise<void>;
  qmp?: QmpClient;
  stderr: string;
}

const live = new Set<ChildProcess>();
let exitHook = false;
function track(c: ChildProcess): void {
  live.add(c);
  c.once('exit', () => live.delete(c));
  if (!exitHook) {
    exitHook = true;
    // never leave QEMU processes behind when the test/daemon process dies
    process.once('exit', () => {
      for (const p of live) p.kill('SIGKILL');
    });
  }
}

export class QemuDirectProvisioner implements Provisioner {
  readonly kind = 'qemu-direct';
  private readonly recs = new Map<string, Rec>();
  private pool: Vm[] = [];
  private readonly dir: string;

  constructor(private readonly o: QemuDirectOptions) {
    this.dir = o.dir ?? cacheDir('qemu-direct');
  }

  pooled(): readonly Vm[] {
    return this.pool;
  }

  async cloneFromTemplate(spec: VmSpec): Promise<{ vm: Vm; clone_ms: number }> {
    checkName(spec.name);
    if (this.recs.has(spec.name)) throw new Error(`VM ${spec.name} already exists`);
    const t0 = performance.now();
    const disk = join(this.dir, `${spec.name}.qcow2`);
    rmSync(disk, { force: true });
    await cloneDisk(this.o.template, disk, spec.disk);
    const vm: Vm = { name: spec.name, spec: { ...spec }, state: 'defined', disk, serialLog: join(this.dir, `${spec.name}.serial.log`) };
    this.recs.set(spec.name, { vm, mac: newMac(), qmpPath: join(this.dir, `${spec.name}.qmp`), stderr: '' });
    return { vm, clone_ms: performance.now() - t0 };
  }

  private rec(vm: Vm): Rec {
    const r = this.recs.get(vm.name);
    if (!r) throw new Error(`VM ${vm.name} is not managed by this provisioner`);
    return r;
  }

  private args(r: Rec): string[] {
    const { vm } = r;
    const s = vm.spec;
    const a = [
      '-name', vm.name,
      '-accel', this.o.accel ?? 'tcg,thread=multi',
      '-cpu', this.o.cpu ?? 'qemu64',
      '-smp', String(s.vcpus),
      '-m', `${s.memMiB}M`,
      '-nodefaults', '-display', 'none', '-no-reboot',
      '-kernel', s.kernel,
      '-initrd', s.initrd,
      '-append', s.cmdline,
      '-serial', `file:${vm.serialLog}`,
      '-drive', `file=${vm.disk},format=qcow2,if=virtio,cache=unsafe`,
      '-qmp', `unix:${r.qmpPath},server=on,wait=off`,
    ];
    const ramDir = this.o.ramDir === undefined ? '/dev/shm' : this.o.ramDir;
    if (ramDir) {
      vm.ramFile = join(ramDir, `ciel-${vm.name}.ram`);
      a.push('-object', `memory-backend-file,id=ram0,size=${s.memMiB}M,mem-path=${vm.ramFile},share=on`, '-machine', 'pc,memory-backend=ram0');
    } else {
      vm.ramFile = undefined;
      a.push('-machine', 'pc');
    }
    if (this.o.extraArgs) a.push(...this.o.extraArgs(vm, r.mac));
    return a;
  }

  async start(vm: Vm): Promise<{ boot_ms: number }> {
    const r = this.rec(vm);
    const t0 = performance.now();
    if (vm.state === 'paused') {
      await r.qmp!.cont();
      vm.state = 'running';
      return { boot_ms: performance.now() - t0 };
    }
    if (vm.state === 'running') throw new Error(`VM ${vm.name} is already running`);
    if (vm.state === 'destroyed') throw new Error(`VM ${vm.name} was destroyed`);
    rmSync(vm.serialLog, { force: true });
    rmSync(r.qmpPath, { force: true });
    const qemu = this.o.qemu ?? 'qemu-system-x86_64';
    const [cmd, ...pre] = [...(this.o.wrapper ?? []), qemu];
    const child = spawn(cmd!, [...pre, ...this.args(r)], { stdio: ['ignore', 'ignore', 'pipe'] });
    track(child);
    r.child = child;
    r.stderr = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => {
      r.stderr = (r.stderr + d).slice(-4000);
    });
    r.exited = new Promise((res) => child.once('exit', () => res()));
    // QEMU died on its own (guest panic with -no-reboot, OOM kill, ...): the VM is stopped, not running
    child.once('exit', () => {
      if (r.child === child && (vm.state === 'running' || vm.state === 'paused')) {
        vm.state = 'stopped';
        vm.pid = undefined;
        r.child = undefined;
        r.qmp?.close();
        r.qmp = undefined;
      }
    });
    const spawnErr = new Promise<never>((_, rej) => child.once('error', (e) => rej(new ToolError(qemu, e.message))));
    spawnErr.catch(() => {});
    vm.pid = child.pid;
    vm.state = 'running';
    const alive = () => child.exitCode === null && child.signalCode === null;
    try {
      r.qmp = await Promise.race([this.connectQmp(r, alive), spawnErr]);
      const ready = readyLine(vm.spec);
      if (ready !== null) {
        await Promise.race([waitForText(vm.serialLog, ready, { timeoutMs: this.o.bootTimeoutMs ?? 90_000, alive }), spawnErr]);
      }
    } catch (err) {
      const msg = `${(err as Error).message}${r.stderr ? `; qemu stderr: ${r.stderr.trim()}` : ''}`;
      await this.kill(r);
      throw new ToolError(qemu, msg);
    }
    return { boot_ms: performance.now() - t0 };
  }

  private async connectQmp(r: Rec, alive: () => boolean): Promise<QmpClient> {
    const deadline = performance.now() + 10_000;
    for (;;) {
      if (existsSync(r.qmpPath)) {
        try {
          return await QmpClient.connect(r.qmpPath, 5000);
        } catch (err) {
          if (performance.now() > deadline) throw err;
        }
      }
      if (!alive()) throw new Error(`QEMU exited (code ${r.child?.exitCode}, signal ${r.child?.signalCode})`);
      if (performance.now() > deadline) throw new Error(`QMP socket ${r.qmpPath} did not appear within 10 s`);
      await sleep(20);
    }
  }

  /** Ask QEMU to quit (QMP), SIGKILL if it does not within 5 s; clean the RAM file and socket. */
  private async kill(r: Rec): Promise<void> {
    const child = r.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      try {
        await r.qmp?.execute('quit', undefined, 2000);
      } catch {
        /* socket gone: fall through to the signal */
      }
      const done = await Promise.race([r.exited!.then(() => true), sleep(5000).then(() => false)]);
      if (!done) {
        child.kill('SIGKILL');
        await r.exited;
      }
    }
    r.qmp?.close();
    r.qmp = undefined;
    r.child = undefined;
    r.vm.pid = undefined;
    if (r.vm.ramFile) rmSync(r.vm.ramFile, { force: true });
    rmSync(r.qmpPath, { force: true });
  }

  async stop(vm: Vm): Promise<void> {
    const r = this.rec(vm);
    await this.kill(r);
    if (vm.state !== 'destroyed') vm.state = 'stopped';
  }

  async destroy(vm: Vm): Promise<void> {
    const r = this.recs.get(vm.name);
    if (!r) return;
    await this.kill(r);
    rmSync(vm.disk, { force: true });
    rmSync(vm.serialLog, { force: true });
    vm.state = 'destroyed';
    this.recs.delete(vm.name);
    this.pool = this.pool.filter((v) => v !== vm);
  }

  async acquire(spec: VmSpec): Promise<Acquired> {
    const p = pickFromPool(this.pool, spec);
    if (p) {
      this.pool = this.pool.filter((v) => v !== p);
      const reuse = p.state === 'paused' ? 'resume' : 'boot';
      // a stopped VM boots with the new container's cmdline and size; its name and disk stay
      if (reuse === 'boot') p.spec = { ...spec, name: p.name };
      const { boot_ms } = await this.start(p);
      return { vm: p, pooled: true, reuse, clone_ms: 0, boot_ms };
    }
    const { vm, clone_ms } = await this.cloneFromTemplate(spec);
    try {
      const { boot_ms } = await this.start(vm);
      return { vm, pooled: false, clone_ms, boot_ms };
    } catch (err) {
      await this.destroy(vm);
      throw err;
    }
  }

  async release(vm: Vm, mode: ReleaseMode = 'pause'): Promise<void> {
    const r = this.rec(vm);
    if (mode === 'pause' && vm.state === 'running') {
      await r.qmp!.stop();
      vm.state = 'paused';
    } else if (vm.state === 'running' || vm.state === 'paused') {
      await this.stop(vm);
    }
    if (!this.pool.includes(vm)) this.pool.push(vm);
  }

  /** QEMU's own run state (QMP query-status): 'running', 'paused', ... */
  async runState(vm: Vm): Promise<string> {
    const r = this.rec(vm);
    if (!r.qmp || r.qmp.closed) return 'shutoff';
    return (await r.qmp.queryStatus()).status;
  }

  async vmStats(v: Vm | string): Promise<VmStats> {
    const r = typeof v === 'string' ? this.recs.get(v) : this.rec(v);
    if (!r) throw new Error(`VM ${String(v)} is not managed by this provisioner`);
    const vm = r.vm;
    if (vm.pid === undefined || !r.child) throw new Error(`VM ${vm.name} is not running`);
    const time = new Date().toISOString();
    const stat = readFileSync(`/proc/${vm.pid}/stat`, 'utf8');
    // fields after "(comm)": state is field 3, utime 14, stime 15
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(f[11]) + Number(f[12]);
    const hz = await clockTicks();
    const status = readFileSync(`/proc/${vm.pid}/status`, 'utf8');
    const rssKiB = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0);
    let rd = 0;
    let wr = 0;
    if (r.qmp && !r.qmp.closed) {
      const bs = await r.qmp.execute<{ stats: { rd_bytes: number; wr_bytes: number } }[]>('query-blockstats');
      for (const b of bs) {
        rd += b.stats.rd_bytes;
        wr += b.stats.wr_bytes;
      }
    }
    const net = this.o.netStats ? await this.o.netStats(vm) : { rx_bytes: 0, tx_bytes: 0 };
    return {
      time,
      vm: vm.name,
      vcpus: vm.spec.vcpus,
      cpu_time_ns: Math.round((ticks * 1e9) / hz),
      memory_used_bytes: rssKiB * 1024,
      memory_total_bytes: vm.spec.memMiB * 1024 * 1024,
      block_rd_bytes: rd,
      block_wr_bytes: wr,
      net_rx_bytes: net.rx_bytes,
      net_tx_bytes: net.tx_bytes,
    };
  }

  async close(): Promise<void> {
    for (const r of [...this.recs.values()]) await this.destroy(r.vm);
    this.pool = [];
  }
}
