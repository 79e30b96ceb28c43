// Replicas of one service of the real Docker guest, behind the controller's provisioner interface: each is
// a clone of the Docker template (qcow2 overlay) whose disk is edited offline before it boots — restart
// policies so only the hot service's container starts, its address on the segment, the VIP on lo for
// direct routing — booted on the private L2 segment. Ready = the service answers HTTP at the replica's own
// address from inside the namespace (not a console line). No pool: a released replica is destroyed (the
// pool and warm start of provisioners/ are for the busybox minimal guest here).
import { ToolError } from '../../common/errors.ts';
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
  private macs = 0;

  constructor(private readonly o: DockerReplicaOptions) {}

  async acquire(asked: VmSpec): Promise<Acquired> {
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

  /** Scale-in: the balancer has drained it already; the VM is destroyed (no pool for Docker replicas here). */
  async release(vm: Vm, _mode?: ReleaseMode): Promise<void> {
    await this.destroy(vm.name);
    vm.state = 'destroyed';
  }

  clone(name: string): DockerClone | undefined {
    return this.clones.get(name);
  }

  private async destroy(name: string): Promise<void> {
    const c = this.clones.get(name);
    this.clones.delete(name);
    await c?.stop();
  }

  async close(): Promise<void> {
    for (const n of [...this.clones.keys()]) await this.destroy(n);
  }
}
