// QEMU-direct provisioner: one QEMU process per VM, qcow2 overlays (or sparse copies) of a template
// disk, no daemon. The embedded default. Pause/resume and block stats go through QMP (vmi/qmp.ts);
// CPU time and memory come from /proc/<qemu pid> (the whole QEMU process, as libvirt's cpu.time counts
// the VM's cgroup).
//
// Guest RAM is a shared file (memory-backend-file,share=on) in /dev/shm by default, so the monitor can
// read it while the VM runs (file offset = guest-physical address for guests <= 3583 MiB on `pc`).
//
// Every VM gets a second UART (ttyS1) backed by a unix socket: the control channel. The test guest
// (guest.ts) and the LB VM run a command loop there; `exec(vm, script)` runs a shell script in the guest
// (guest-channel.ts is the host side).
//
// Warm start (Kaleidoscope's lesson, paper 002: restoring a booted VM's memory beats booting): a booted
// minimal VM (the guest's `ciel.warm=1` mode: modules loaded, NIC up, no identity) is saved once with
// QEMU's `migrate "exec:cat > FILE"` (QEMU 7.2 has no `file:` migration URI; it came with 8.2), and each
// new VM is a fresh QEMU started with `-incoming "exec:cat FILE"` on its own overlay disk, then its
// identity is fixed up over the control channel (warm-identity.ts): MAC (the e1000's MAC comes back from the snapshot),
// address, VIP, and the container(s) it runs.

import { chooseAccel } from '../common/accel.ts';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { cacheDir } from '../common/cache.ts';
import { ToolError } from '../common/errors.ts';
import { QmpClient } from '../vmi/qmp.ts';
import { QemuProcStats } from '../vmstats/qemu-proc-stats.ts';
import type { VmStats } from '../controller/types.ts';
import { cloneDisk, newMac, sleep, waitForText } from './common.ts';
import { GuestChannel, type ExecResult } from './guest-channel.ts';
import { fixupScript, type WarmIdentity, type WarmImage } from './warm-identity.ts';
import { checkName, pickFromPool, readyLine, type Acquired, type Provisioner, type ReleaseMode, type Vm, type VmSpec } from './provisioner.ts';

export interface QemuDirectOptions {
  /** qcow2 template disk */
  template: string;
  /** where clones' disks, serial logs and QMP sockets go; default cacheDir('qemu-direct') */
  dir?: string;
  qemu?: string;
  /** QEMU -accel value; default from common/accel.ts (KVM only with vmx/svm, else TCG) */
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
  /**
   * Called by acquire() with the VM's disk offline, before it boots (a fresh clone, or a stopped pooled
   * VM re-specced for another container): e.g. disk-edit.ts selectContainers(vm.disk, ...) so that only
   * the needed container starts. Its time counts into clone_ms.
   */
  beforeBoot?: (vm: Vm) => Promise<void>;
  /**
   * Warm start in acquire(): when no paused pooled VM fits, a new VM is restored from this saved image
   * (warmStart, ~1 s) rather than booted from a stopped pooled VM or a fresh clone (~10 s under TCG).
   * identity(spec) gives its address/containers; undefined for a spec means: boot it cold.
   */
  warm?: { image: WarmImage; identity: (spec: VmSpec) => WarmIdentity | undefined };
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
  /** warm start: the next start() restores this saved memory image instead of booting */
  incoming?: string;
  child?: ChildProcess;
  exited?: Promise<void>;
  qmp?: QmpClient;
  /** per-thread CPU clock of the running QEMU (vmStats) */
  proc?: QemuProcStats;
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
    this.recs.set(spec.name, {
      vm,
      mac: newMac(),
      qmpPath: join(this.dir, `${spec.name}.qmp`),
      ctlPath: join(this.dir, `${spec.name}.ctl`),
      stderr: '',
    });
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
      '-chardev', `socket,id=ctl0,path=${r.ctlPath},server=on,wait=off`,
      '-device', 'isa-serial,chardev=ctl0',
    ];
    if (r.incoming) a.push('-incoming', `exec:cat '${r.incoming.replace(/'/g, `'\\''`)}'`);
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
    rmSync(r.ctlPath, { force: true });
    const qemu = this.o.qemu ?? 'qemu-system-x86_64';
    const [cmd, ...pre] = [...(this.o.wrapper ?? []), qemu];
    const keep = this.o.keepOnExit === true;
    const child = spawn(cmd!, [...pre, ...this.args(r)], { stdio: ['ignore', 'ignore', 'pipe'], detached: keep });
    if (keep) {
      // QEMU ignores SIGPIPE: once this process is gone its writes to stderr fail harmlessly
      child.unref();
      (child.stderr as unknown as { unref?: () => void }).unref?.();
    } else track(child);
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
        await Promise.race([waitForText(vm.serialLog, ready, { timeoutMs: this.o.bootTimeoutMs ?? 90_000, alive }), spawnErr]);
      }
    } catch (err) {
      const msg = `${(err as Error).message}${r.stderr ? `; qemu stderr: ${r.stderr.trim()}` : ''}`;
      await this.kill(r);
      throw new ToolError(qemu, msg);
    }
    return { boot_ms: performance.now() - t0 };
  }

  /** Restoring: wait until the incoming migration has completed and the guest runs again. */
  private async waitIncoming(r: Rec, alive: () => boolean): Promise<void> {
    const deadline = performance.now() + (this.o.bootTimeoutMs ?? 90_000);
    for (;;) {
      const st = await r.qmp!.queryStatus();
      if (st.running) return;
      if (st.status !== 'inmigrate' && st.status !== 'prelaunch' && st.status !== 'restore-vm') {
        throw new Error(`restore from ${r.incoming} ended in state ${st.status}`);
      }
      if (!alive()) throw new Error('QEMU exited while restoring');
      if (performance.now() > deadline) throw new Error(`restore from ${r.incoming} did not finish in time`);
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
    r.channel?.close();
    r.channel = undefined;
    r.child = undefined;
    r.vm.pid = undefined;
    if (r.vm.ramFile) rmSync(r.vm.ramFile, { force: true });
    rmSync(r.qmpPath, { force: true });
    rmSync(r.ctlPath, { force: true });
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

  async acquire(spec: VmSpec): Promise<Acquired & { warm?: boolean }> {
    const p = pickFromPool(this.pool, spec);
    const id = this.o.warm && (!p || p.state !== 'paused') ? this.o.warm.identity(spec) : undefined;
    if (id && this.o.warm) {
      const { restore_ms: _r, fixup_ms: _f, ...a } = await this.warmStart(spec, this.o.warm.image, id);
      return { ...a, warm: true };
    }
    if (p) {
      this.pool = this.pool.filter((v) => v !== p);
      const reuse = p.state === 'paused' ? 'resume' : 'boot';
      // a stopped VM boots with the new container's cmdline and size; its name and disk stay
      let clone_ms = 0;
      if (reuse === 'boot') {
        p.spec = { ...spec, name: p.name };
        if (this.o.beforeBoot) {
          const t0 = performance.now();
          await this.o.beforeBoot(p);
          clone_ms = performance.now() - t0;
        }
      }
      const { boot_ms } = await this.start(p);
      return { vm: p, pooled: true, reuse, clone_ms, boot_ms };
    }
    const made = await this.cloneFromTemplate(spec);
    const vm = made.vm;
    try {
      const t0 = performance.now();
      await this.o.beforeBoot?.(vm);
      const clone_ms = made.clone_ms + (performance.now() - t0);
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
    if (r.proc?.pid !== vm.pid) r.proc = new QemuProcStats(vm.pid);
    const p = r.proc.read();
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
      cpu_time_ns: p.cpu_time_ns,
      memory_used_bytes: p.rss_bytes,
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

  /** The MAC the provisioner gave the VM's NIC (extraArgs' `mac`). */
  macOf(vm: Vm): string {
    return this.rec(vm).mac;
  }

  /** The control channel of a running VM (connected on first use; waits for the guest's loop). */
  async channel(vm: Vm, timeoutMs = 30_000): Promise<GuestChannel> {
    const r = this.rec(vm);
    if (!r.child || vm.state !== 'running') throw new Error(`VM ${vm.name} is not running`);
    return GuestChannel.reuseOrOpen(r, timeoutMs);
  }

  /** Run a shell script inside the guest over the control channel. */
  async exec(vm: Vm, script: string, timeoutMs = 30_000): Promise<ExecResult> {
    return (await this.channel(vm, timeoutMs)).exec(script, timeoutMs);
  }

  /**
   * Save a running VM's memory and device state to `file` (QEMU `migrate "exec:cat > FILE"`). The VM is
   * left paused (QEMU's `postmigrate`); destroy it or resume it with start(). Returns the image to
   * restore clones from.
   */
  async saveWarmImage(vm: Vm, file: string, timeoutMs = 120_000): Promise<{ image: WarmImage; save_ms: number; bytes: number }> {
    const r = this.rec(vm);
    if (!r.qmp || vm.state !== 'running') throw new Error(`VM ${vm.name} is not running`);
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

  /**
   * Make a warm image: boot `spec` (a warm-mode guest, e.g. the test guest's cmdline with `warm: true`
   * and ready `CIEL-WARM-READY`), save its memory to `file`, destroy the VM.
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
   * A new VM restored from a warm image, its identity fixed up over the control channel: a new MAC (this
   * VM's own), `identity.ip`/`vip` on eth0/lo, and the containers started (the first one serves HTTP
   * when it has an address). `CIEL-READY <container>` is then written to its console like a booted
   * guest's. boot_ms covers restore + fix-up (restore_ms and fixup_ms split it).
   */
  async warmStart(spec: VmSpec, image: WarmImage, identity: WarmIdentity = {}): Promise<Acquired & { restore_ms: number; fixup_ms: number }> {
    const s = image.spec;
    // the machine must match the saved one; name, disk strategy and container are the new VM's
    const { vm, clone_ms } = await this.cloneFromTemplate({
      ...spec,
      vcpus: s.vcpus,
      memMiB: s.memMiB,
      kernel: s.kernel,
      initrd: s.initrd,
      cmdline: s.cmdline,
      ready: null,
    });
    const r = this.rec(vm);
    r.incoming = image.file;
    try {
      const t0 = performance.now();
      await this.start(vm);
      const restore_ms = performance.now() - t0;
      r.incoming = undefined;
      const res = await this.exec(vm, fixupScript(r.mac, identity, spec.container), this.o.bootTimeoutMs ?? 90_000);
      if (res.rc !== 0) throw new Error(`identity fix-up of ${vm.name} failed (rc ${res.rc}): ${res.out}`);
      const boot_ms = performance.now() - t0;
      // from now on this is `spec`'s VM on the saved machine: the pool matches it against the same spec,
      // and stopped, it boots cold as that container
      vm.spec = { ...spec, name: vm.name, vcpus: s.vcpus, memMiB: s.memMiB, kernel: s.kernel, initrd: s.initrd };
      return { vm, pooled: false, clone_ms, boot_ms, restore_ms, fixup_ms: boot_ms - restore_ms };
    } catch (err) {
      await this.destroy(vm);
      throw err;
    }
  }
}
