// Replicas of one service of the real Docker guest, behind the controller's provisioner interface: each is
// a clone of the Docker template (qcow2 overlay) whose disk is edited offline before it boots — restart
// policies so only the hot service's container starts, its address on the segment, the VIP on lo for
// direct routing — booted on the private L2 segment. Ready = the service answers HTTP at the replica's own
// address from inside the namespace (not a console line). A scale-in's release ("pause", the default)
// pauses the VM (QMP stop on its second QMP socket; the first is the monitor's) and keeps it in a pool; the
// next acquire for that service resumes it (QMP cont) with its own address, and it is ready when it
// answers again. "stop" destroys it.
import { ToolError } from '../../common/errors.ts';
import { QmpClient } from '../../vmi/qmp.ts';
import { addressOf } from '../../controller/tracking-provisioner.ts';
import type { Acquired, ReleaseMode, Vm, VmSpec } from '../../provisioners/provisioner.ts';
import type { ReplicaProvisioner } from '../../controller/autoscaler.ts';
import { cloneAndBoot, type DockerClone } from '../docker-guest/clone.ts';
import { directRoutingFiles } from '../docker-guest/direct-routing.ts';
import type { L2Segment } from '../lb/netns.ts';
import { webAnswers } from './segment-probe.ts';

export interface DockerReplicaOptions {
  segment: L2Segment;
  vip: string;
  /** appended to every replica's VM name: its RAM file, run dir and overlay are named after it, and another
   * experiment on the host may be starting its own `ciel-web-1` */
  tag: string;
  /** give up when the service has not answered this long after QEMU started; default 420 000 ms */
  readyTimeoutMs?: number;
  log?: (m: string) => void;
}

export class DockerReplicaProvisioner implements ReplicaProvisioner {
  readonly kind = 'docker-clone';
  readonly clones = new Map<string, DockerClone>();
  /** paused replicas by VM name, with the Vm record they were handed out with */
  private readonly pool = new Map<string, Vm>();
  private macs = 0;

  constructor(private readonly o: DockerReplicaOptions) {}

  /** Paused replicas of a service, oldest first. */
  pooled(container?: string): Vm[] {
    return [...this.pool.values()].filter((v) => !container || v.spec.container === container);
  }

  async acquire(asked: VmSpec): Promise<Acquired> {
    const reuse = this.pooled(asked.container)[0];
    if (reuse) return this.resume(reuse);
    const spec = { ...asked, name: `${asked.name}-${this.o.tag}` };
    const ip = addressOf(spec);
    if (!ip) throw new ToolError('docker-replica', `${spec.name}: no ciel.ip= in the spec's command line: a replica needs its address`);
    const t0 = performance.now();
    const mac = `52:54:00:c1:e2:${(0x20 + this.macs++).toString(16).padStart(2, '0')}`;
    const clone = await cloneAndBoot({
      name: spec.name,
      keep: [spec.container],
      address: `${ip}/24`,
      files: directRoutingFiles(`${ip}/24`, this.o.vip),
      memMiB: spec.memMiB,
      network: { wrapper: this.o.segment.wrapper, nicArgs: this.o.segment.nicArgs({ name: spec.name } as Vm, mac) },
      log: this.o.log,
    });
    this.clones.set(spec.name, clone);
    const clone_ms = clone.times.editMs;
    try {
      const deadline = clone.guest.t0 + (this.o.readyTimeoutMs ?? 420_000);
      while (!(await webAnswers(this.o.segment, ip))) {
        if (!clone.guest.alive()) throw new ToolError('qemu', `replica ${spec.name} exited before web answered`);
        if (performance.now() > deadline) throw new ToolError('docker-replica', `web on ${spec.name} (${ip}) did not answer within ${this.o.readyTimeoutMs ?? 420_000} ms`);
        await new Promise((r) => setTimeout(r, 500));
      }
    } catch (e) {
      await this.destroy(spec.name);
      throw e;
    }
    const boot_ms = performance.now() - t0 - clone_ms;
    const vm: Vm = { name: spec.name, spec: { ...spec }, state: 'running', disk: clone.overlay, serialLog: clone.guest.consoleLog, pid: clone.guest.pid, ramFile: clone.guest.memFile };
    return { vm, clone_ms, boot_ms, pooled: false };
  }

  /** A paused replica back to work: QMP cont, ready when its service answers at its own address again. */
  private async resume(vm: Vm): Promise<Acquired> {
    const clone = this.clones.get(vm.name);
    const ip = addressOf(vm);
    if (!clone || !ip) throw new ToolError('docker-replica', `${vm.name}: pooled replica without its VM or address`);
    this.pool.delete(vm.name);
    const t0 = performance.now();
    try {
      await this.qmp(clone, (q) => q.cont());
      const deadline = t0 + (this.o.readyTimeoutMs ?? 420_000);
      while (!(await webAnswers(this.o.segment, ip))) {
        if (!clone.guest.alive()) throw new ToolError('qemu', `pooled replica ${vm.name} exited before web answered`);
        if (performance.now() > deadline) throw new ToolError('docker-replica', `web on pooled ${vm.name} (${ip}) did not answer within ${this.o.readyTimeoutMs ?? 420_000} ms of its resume`);
        await new Promise((r) => setTimeout(r, 100));
      }
    } catch (e) {
      await this.destroy(vm.name);
      throw e;
    }
    vm.state = 'running';
    return { vm, clone_ms: 0, boot_ms: performance.now() - t0, pooled: true, reuse: 'resume' };
  }

  /**
   * Scale-in (the balancer has drained it already): "pause" (the default) stops its vCPUs and keeps it
   * for the next scale-out of its service; "stop" destroys it.
   */
  async release(vm: Vm, mode: ReleaseMode = 'pause'): Promise<void> {
    const clone = this.clones.get(vm.name);
    if (mode === 'pause' && clone?.guest.alive()) {
      try {
        await this.qmp(clone, (q) => q.stop());
        vm.state = 'paused';
        this.pool.set(vm.name, vm);
        this.o.log?.(`${vm.name} paused into the pool`);
        return;
      } catch (e) {
        this.o.log?.(`${vm.name}: pause failed (${(e as Error).message}); destroying it`);
      }
    }
    await this.destroy(vm.name);
    vm.state = 'destroyed';
  }

  /** One command on the replica's control QMP socket (the monitor holds the other one). */
  private async qmp<T>(clone: DockerClone, f: (q: QmpClient) => Promise<T>): Promise<T> {
    const q = await QmpClient.connect(clone.guest.controlQmpSocket);
    try {
      return await f(q);
    } finally {
      q.close();
    }
  }

  clone(name: string): DockerClone | undefined {
    return this.clones.get(name);
  }

  private async destroy(name: string): Promise<void> {
    const c = this.clones.get(name);
    this.clones.delete(name);
    this.pool.delete(name);
    await c?.stop();
  }

  async close(): Promise<void> {
    for (const n of [...this.clones.keys()]) await this.destroy(n);
  }
}
