// QEMU-direct provisioner: one QEMU process per VM, qcow2 overlays (or sparse copies) of a template
// disk, no daemon. The embedded default. This file holds the VM primitives (QemuDirectVms, a
// VmBackend); the pool and the warm-start flow over them are pool.ts's. Pause/resume and block stats go
// through QMP (vmi/qmp.ts); CPU time and memory come from /proc/<qemu pid> (vmstats/qemu-vm-stats.ts).
//
// Guest RAM is a shared file (memory-backend-file,share=on) in /dev/shm by default, so the monitor can
// read it while the VM runs (file offset = guest-physical address for guests <= 3583 MiB on `pc`).
//
// Every VM gets a second UART (ttyS1) backed by a unix socket: the control channel. The test guest
// and the LB VM run a command loop there; `exec(vm, script)` runs a shell script in the guest
// (guest-channel.ts is the host side).
//
// Warm start (Kaleidoscope's lesson, paper 002: restoring a booted VM's memory beats booting): a booted
// minimal VM (the guest's `ciel.warm=1` mode: modules loaded, NIC up, no identity) is saved once with
// QEMU's `migrate "exec:cat > FILE"` (QEMU 7.2 has no `file:` migration URI; it came with 8.2), and each
// new VM is a fresh QEMU started with `-incoming "exec:cat FILE"` on its own overlay disk; pool.ts then
// fixes up its identity over the control channel (warm-identity.ts). That overlay is a fresh one of the
// template, so this holds only for a guest that had no disk mounted when it was saved (the test guest's
// warm mode mounts none): a guest running from its disk must be restored on the disk as it was saved
// (the Docker guest's warm start, testbed/docker-guest/warm.ts, keeps that disk frozen as the base).

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { chooseAccel } from '../common/accel.ts';
import { cacheDir } from '../common/cache.ts';
import { ensurePrivateDir, privateShmDir } from '../common/private-dir.ts';
import { ToolError } from '../common/errors.ts';
import { abortableSleep as sleep } from '../common/sleep.ts';
import { QmpClient } from '../vmi/qmp.ts';
import { QemuProcStats } from '../vmstats/qemu-proc-stats.ts';
import { readQemuVmStats } from '../vmstats/qemu-vm-stats.ts';
import type { VmStats } from '../vmstats/vm-stats.ts';
import { cloneDisk } from './disk-clone.ts';
import { ProvisionError } from './errors.ts';
import { GuestChannel } from './guest-channel.ts';
import { killOnExit } from './kill-on-exit.ts';
import { newMac } from './mac.ts';
import { VmPool, type PoolOptions } from './pool.ts';
import { checkName, readyLine, type Vm, type VmSpec } from './provisioner.ts';
import { waitForText } from './serial-log.ts';
import { alive, qemuProcess, QemuDirectRecovery } from './qemu-processes.ts';
import type { BackendRecovery, RestoredVm, SavedImage, VmBackend } from './vm-backend.ts';
import type { WarmImage } from './warm-identity.ts';

export interface QemuDirectOptions extends PoolOptions {
  /** qcow2 template disk */
  template: string;
  /** where clones' disks, serial logs, memory snapshots and QMP sockets go (made 0700); default cacheDir('qemu-direct') */
  dir?: string;
  qemu?: string;
  /** QEMU -accel value; default from common/accel.ts (KVM only with vmx/svm, else TCG) */
  accel?: string;
  /** default 'qemu64' */
  cpu?: string;
  /** wait for the ready line (and a restore) at most this long; default 90 000 ms */
  bootTimeoutMs?: number;
  /** directory for the shared guest-RAM files (made 0700); default /dev/shm/ciel-<uid>; null: anonymous RAM (not readable) */
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
  /**
   * QEMU processes may outlive this process (`ciel autoscale` leaves its replicas running on exit):
   * each starts in its own process group (a terminal's Ctrl-C does not reach it), is not killed by the
   * exit hook, and its process handle does not hold the event loop. stop()/destroy()/close() still
   * end it. Default false: every QEMU this provisioner started dies with this process.
   */
  keepOnExit?: boolean;
}

interface Rec {
  vm: Vm;
  mac: string;
  qmpPath: string;
  /** unix socket of the control channel (ttyS1) */
  ctlPath: string;
  channel?: GuestChannel;
  /** warm start: the next boot restores this saved memory image instead of booting */
  incoming?: string;
  child?: ChildProcess;
  /** a QEMU an earlier process started, taken over by adopt(): not our child, known by pid */
  adopted?: number;
  exited?: Promise<void>;
  qmp?: QmpClient;
  /** per-thread CPU clock of the running QEMU (vmStats) */
  proc?: QemuProcStats;
  stderr: string;
}

/** The VM primitives over QEMU processes. */
export class QemuDirectVms implements VmBackend {
  readonly kind = 'qemu-direct';
  private readonly recs = new Map<string, Rec>();
  private readonly dir: string;

  constructor(private readonly o: QemuDirectOptions) {
    this.dir = ensurePrivateDir(o.dir ?? cacheDir('qemu-direct'));
  }

  private rec(vm: Vm): Rec {
    const r = this.recs.get(vm.name);
    if (!r) throw new ProvisionError(vm.name, 'lookup', `VM ${vm.name} is not managed by this provisioner`);
    return r;
  }

  check(vm: Vm): void {
    this.rec(vm);
  }

  vms(): Vm[] {
    return [...this.recs.values()].map((r) => r.vm);
  }

  get recovery(): BackendRecovery {
    return new QemuDirectRecovery(
      this.dir,
      () => (this.o.ramDir === undefined ? privateShmDir() : this.o.ramDir && ensurePrivateDir(this.o.ramDir)),
      (vm, pid, mac) => this.take(vm, pid, mac),
      (name) => this.recs.get(name)?.vm,
      (vm) => this.destroy(vm),
      (pid) => this.killPid(pid),
    );
  }

  /** Track a running QEMU an earlier process started (found by recovery.adopt): QMP reconnected, run state read. */
  private async take(vm: Vm, pid: number, mac: string | undefined): Promise<boolean> {
    if (this.recs.has(vm.name)) throw new ProvisionError(vm.name, 'adopt', `VM ${vm.name} is already managed by this provisioner`);
    const r: Rec = { vm, mac: mac ?? newMac(), qmpPath: join(this.dir, `${vm.name}.qmp`), ctlPath: join(this.dir, `${vm.name}.ctl`), adopted: pid, stderr: '' };
    if (existsSync(this.monitorQmpPath(vm.name))) vm.monitorQmp = this.monitorQmpPath(vm.name);
    try {
      r.qmp = await QmpClient.connect(r.qmpPath, 5000);
      const st = await r.qmp.queryStatus();
      vm.state = st.running ? 'running' : 'paused';
    } catch {
      // alive but not answering: not a VM we can serve from; the caller reaps it
      r.qmp?.close();
      return false;
    }
    vm.pid = pid;
    // where define() put them (an earlier process's record may be older than its disk)
    vm.disk = join(this.dir, `${vm.name}.qcow2`);
    vm.serialLog = join(this.dir, `${vm.name}.serial.log`);
    r.exited = (async () => {
      while (alive(pid)) await sleep(50);
    })();
    this.recs.set(vm.name, r);
    return true;
  }

  /** End a QEMU that is not our child: QMP quit when we hold its socket, SIGKILL after 5 s. */
  private async killAdopted(r: Rec, pid: number): Promise<void> {
    if (!alive(pid)) return;
    try {
      await r.qmp?.execute('quit', undefined, 2000);
    } catch {
      /* socket gone: the signal below */
    }
    const t0 = performance.now();
    while (alive(pid) && performance.now() - t0 < 5000) await sleep(50);
    if (alive(pid)) await this.killPid(pid);
  }

  /** SIGKILL a QEMU process of our folder (checked again just before) and wait until it is gone. */
  private async killPid(pid: number): Promise<void> {
    if (!qemuProcess(pid, this.dir)) return;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone meanwhile */
    }
    while (alive(pid)) await sleep(20);
  }

  async define(spec: VmSpec): Promise<{ vm: Vm; clone_ms: number }> {
    checkName(spec.name);
    if (this.recs.has(spec.name)) throw new ProvisionError(spec.name, 'define', `VM ${spec.name} already exists`);
    const t0 = performance.now();
    const disk = join(this.dir, `${spec.name}.qcow2`);
    rmSync(disk, { force: true });
    await cloneDisk(this.o.template, disk, spec.disk);
    const vm: Vm = { name: spec.name, spec: { ...spec }, state: 'defined', disk, serialLog: join(this.dir, `${spec.name}.serial.log`) };
    this.recs.set(spec.name, {
      vm,
      mac: newMac(),
      qmpPath: join(this.dir, `${spec.name}.qmp`),
      ctlPath: join(this.dir, `${spec.name}.ctl`),
      stderr: '',
    });
    return { vm, clone_ms: performance.now() - t0 };
  }

  private monitorQmpPath(name: string): string {
    return join(this.dir, `${name}.monitor.qmp`);
  }

  private args(r: Rec): string[] {
    const { vm } = r;
    vm.monitorQmp = this.monitorQmpPath(vm.name);
    const s = vm.spec;
    const a = [
      '-name', vm.name,
      '-accel', this.o.accel ?? chooseAccel().args[1],
      '-cpu', this.o.cpu ?? chooseAccel().args[3],
      '-smp', String(s.vcpus),
      '-m', `${s.memMiB}M`,
      '-nodefaults', '-display', 'none', '-no-reboot',
      '-kernel', s.kernel,
      '-initrd', s.initrd,
      '-append', s.cmdline,
      '-serial', `file:${vm.serialLog}`,
      '-drive', `file=${vm.disk},format=qcow2,if=virtio,cache=unsafe`,
      '-qmp', `unix:${r.qmpPath},server=on,wait=off`,
      // the second QMP socket is the user's (ciel monitor); the first stays the provisioner's
      '-qmp', `unix:${this.monitorQmpPath(vm.name)},server=on,wait=off`,
      '-chardev', `socket,id=ctl0,path=${r.ctlPath},server=on,wait=off`,
      '-device', 'isa-serial,chardev=ctl0',
    ];
    if (r.incoming) a.push('-incoming', `exec:cat '${r.incoming.replace(/'/g, `'\\''`)}'`);
    const ramDir = this.o.ramDir === undefined ? privateShmDir() : this.o.ramDir && ensurePrivateDir(this.o.ramDir);
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

  async boot(vm: Vm): Promise<void> {
    const r = this.rec(vm);
    if (vm.state === 'running') throw new ProvisionError(vm.name, 'boot', `VM ${vm.name} is already running`);
    if (vm.state === 'destroyed') throw new ProvisionError(vm.name, 'boot', `VM ${vm.name} was destroyed`);
    rmSync(vm.serialLog, { force: true });
    rmSync(r.qmpPath, { force: true });
    rmSync(r.ctlPath, { force: true });
    const qemu = this.o.qemu ?? 'qemu-system-x86_64';
    const [cmd, ...pre] = [...(this.o.wrapper ?? []), qemu];
    const keep = this.o.keepOnExit === true;
    const child = spawn(cmd!, [...pre, ...this.args(r)], { stdio: ['ignore', 'ignore', 'pipe'], detached: keep });
    if (keep) {
      // QEMU ignores SIGPIPE: once this process is gone its writes to stderr fail harmlessly
      child.unref();
      (child.stderr as unknown as { unref?: () => void }).unref?.();
    } else killOnExit(child);
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
      const ready = r.incoming ? null : readyLine(vm.spec);
      if (r.incoming) await Promise.race([this.waitIncoming(r, alive), spawnErr]);
      if (ready !== null) {
        await Promise.race([waitForText(vm.serialLog, ready, { timeoutMs: this.o.bootTimeoutMs ?? 90_000, alive, vm: vm.name }), spawnErr]);
      }
    } catch (err) {
      const msg = `${(err as Error).message}${r.stderr ? `; qemu stderr: ${r.stderr.trim()}` : ''}`;
      await this.kill(r);
      throw new ToolError(qemu, msg);
    }
  }

  /** Restoring: wait until the incoming migration has completed and the guest runs again. */
  private async waitIncoming(r: Rec, alive: () => boolean): Promise<void> {
    const deadline = performance.now() + (this.o.bootTimeoutMs ?? 90_000);
    const fail = (msg: string) => new ProvisionError(r.vm.name, 'restore', msg);
    for (;;) {
      const st = await r.qmp!.queryStatus();
      if (st.running) return;
      if (st.status !== 'inmigrate' && st.status !== 'prelaunch' && st.status !== 'restore-vm') {
        throw fail(`restore from ${r.incoming} ended in state ${st.status}`);
      }
      if (!alive()) throw fail('QEMU exited while restoring');
      if (performance.now() > deadline) throw fail(`restore from ${r.incoming} did not finish in time`);
      await sleep(10);
    }
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
      if (!alive()) throw new ProvisionError(r.vm.name, 'boot', `QEMU exited (code ${r.child?.exitCode}, signal ${r.child?.signalCode})`);
      if (performance.now() > deadline) throw new ProvisionError(r.vm.name, 'boot', `QMP socket ${r.qmpPath} did not appear within 10 s`);
      await sleep(20);
    }
  }

  /** Ask QEMU to quit (QMP), SIGKILL if it does not within 5 s; clean the RAM file and socket. */
  private async kill(r: Rec): Promise<void> {
    if (r.adopted !== undefined) await this.killAdopted(r, r.adopted);
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
    r.channel?.close();
    r.channel = undefined;
    r.child = undefined;
    r.adopted = undefined;
    r.vm.pid = undefined;
    if (r.vm.ramFile) rmSync(r.vm.ramFile, { force: true });
    rmSync(this.monitorQmpPath(r.vm.name), { force: true });
    r.vm.monitorQmp = undefined;
    rmSync(r.qmpPath, { force: true });
    rmSync(r.ctlPath, { force: true });
  }

  async pause(vm: Vm): Promise<void> {
    await this.rec(vm).qmp!.stop();
    vm.state = 'paused';
  }

  async resume(vm: Vm): Promise<void> {
    await this.rec(vm).qmp!.cont();
    vm.state = 'running';
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
  }

  /** The QEMU command line is made at boot: the new spec is all there is to change. */
  async respec(vm: Vm, spec: VmSpec): Promise<void> {
    this.rec(vm);
    vm.spec = { ...spec, name: vm.name };
  }

  /** QEMU's own run state (QMP query-status): 'running', 'paused', ... */
  async runState(vm: Vm): Promise<string> {
    const r = this.rec(vm);
    if (!r.qmp || r.qmp.closed) return 'shutoff';
    return (await r.qmp.queryStatus()).status;
  }

  async vmStats(v: Vm | string): Promise<VmStats> {
    const r = typeof v === 'string' ? this.recs.get(v) : this.rec(v);
    if (!r) throw new ProvisionError(String(v), 'stats', `VM ${String(v)} is not managed by this provisioner`);
    const vm = r.vm;
    if (vm.pid === undefined || (!r.child && r.adopted === undefined)) throw new ProvisionError(vm.name, 'stats', `VM ${vm.name} is not running`);
    if (r.proc?.pid !== vm.pid) r.proc = new QemuProcStats(vm.pid);
    const net = this.o.netStats;
    return readQemuVmStats({
      name: vm.name,
      vcpus: vm.spec.vcpus,
      memMiB: vm.spec.memMiB,
      proc: r.proc,
      qmp: r.qmp,
      ...(net ? { netStats: () => net(vm) } : {}),
    });
  }

  macOf(vm: Vm): string {
    return this.rec(vm).mac;
  }

  async channel(vm: Vm, timeoutMs: number): Promise<GuestChannel> {
    const r = this.rec(vm);
    if ((!r.child && r.adopted === undefined) || vm.state !== 'running') throw new ProvisionError(vm.name, 'channel', `VM ${vm.name} is not running`);
    return GuestChannel.reuseOrOpen(r, timeoutMs);
  }

  /**
   * Save a running VM's memory and device state to `file` (QEMU `migrate "exec:cat > FILE"`). The VM is
   * left paused (QEMU's `postmigrate`); destroy it or resume it.
   */
  async saveImage(vm: Vm, file: string, timeoutMs = 120_000): Promise<SavedImage> {
    const r = this.rec(vm);
    if (!r.qmp || vm.state !== 'running') throw new ProvisionError(vm.name, 'save', `VM ${vm.name} is not running`);
    r.channel?.close(); // the channel's socket is device state that is not migrated; reconnect after
    r.channel = undefined;
    rmSync(file, { force: true });
    const t0 = performance.now();
    await r.qmp.execute('migrate', { uri: `exec:cat > '${file.replace(/'/g, `'\\''`)}'` });
    const deadline = t0 + timeoutMs;
    for (;;) {
      const m = await r.qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
      if (m.status === 'completed') break;
      if (m.status === 'failed' || m.status === 'cancelled') throw new ToolError('qemu', `migrate to ${file}: ${m.status} ${m['error-desc'] ?? ''}`);
      if (performance.now() > deadline) throw new ToolError('qemu', `migrate to ${file} did not complete within ${timeoutMs} ms`);
      await sleep(20);
    }
    vm.state = 'paused';
    const save_ms = performance.now() - t0;
    return { image: { file, spec: { ...vm.spec } }, save_ms, bytes: statSync(file).size };
  }

  /** A fresh QEMU on its own overlay disk, started with `-incoming` from the saved image. */
  async restore(spec: VmSpec, image: WarmImage): Promise<RestoredVm> {
    const s = image.spec;
    // the machine must match the saved one; name, disk strategy and container are the new VM's
    const { vm, clone_ms } = await this.define({ ...spec, vcpus: s.vcpus, memMiB: s.memMiB, kernel: s.kernel, initrd: s.initrd, cmdline: s.cmdline, ready: null });
    const r = this.rec(vm);
    r.incoming = image.file;
    try {
      const t0 = performance.now();
      await this.boot(vm);
      return { vm, clone_ms, restore_ms: performance.now() - t0 };
    } catch (err) {
      await this.destroy(vm);
      throw err;
    } finally {
      r.incoming = undefined;
    }
  }
}

/** The QEMU-direct provisioner: the pool (pool.ts) over QEMU processes. */
export class QemuDirectProvisioner extends VmPool<QemuDirectVms> {
  constructor(o: QemuDirectOptions) {
    super(new QemuDirectVms(o), o);
  }

  /** QEMU's own run state (QMP query-status): 'running', 'paused', ... */
  runState(vm: Vm): Promise<string> {
    return this.backend.runState(vm);
  }
}
