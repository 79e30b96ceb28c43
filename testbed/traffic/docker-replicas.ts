// Replicas of one service of the real Docker guest, behind the controller's provisioner interface, made
// one of two ways when the pool has none:
//  - 'clone' (default): a clone of the Docker template (qcow2 overlay) whose disk is edited offline before
//    it boots — restart policies so only the hot service's container starts, its address on the segment,
//    the VIP on lo for direct routing — booted on the private L2 segment;
//  - 'warm': restored from a warm image (docker-guest/warm.ts: a booted web-only VM saved with QMP
//    migrate, restored with -incoming on an overlay of the image's frozen disk), then given its own MAC,
//    address and VIP over the control channel.
// Ready = the service answers HTTP at the replica's own address from inside the namespace (not a console
// line). A scale-in's release keeps the replica in a pool: "pause" (QMP stop on its second QMP socket; the
// first is the monitor's; the next acquire resumes it with QMP cont) or "stop" (a clean poweroff that
// keeps its overlay — its disk already has only web and its own address; the next acquire boots it again
// on that overlay). Paused replicas are taken before stopped ones.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { ToolError } from '../../common/errors.ts';
import { addressOf } from '../../controller/tracking-provisioner.ts';
import type { Acquired, ReleaseMode, Vm, VmSpec } from '../../provisioners/provisioner.ts';
import type { ReplicaProvisioner } from '../../controller/autoscaler.ts';
import { bootAgain, controlQmp, waitAnswering, type DockerGuest } from '../docker-guest/boot.ts';
import { cloneAndBoot } from '../docker-guest/clone.ts';
import { directRoutingFiles } from '../docker-guest/direct-routing.ts';
import { saveWarmImage, warmStart, type WarmDockerImage } from '../docker-guest/warm.ts';
import type { L2Segment } from '../lb/netns.ts';
import { webAnswers } from './segment-probe.ts';

export interface DockerReplicaOptions {
  segment: L2Segment;
  vip: string;
  /** appended to every replica's VM name: its RAM file, run dir and overlay are named after it, and another
   * experiment on the host may be starting its own `ciel-web-1` */
  tag: string;
  /** new replicas (none in the pool fits) are restored from this image instead of cloned and booted */
  warm?: { image: WarmDockerImage };
  /** give up when the service has not answered this long after QEMU started; default 420 000 ms */
  readyTimeoutMs?: number;
  log?: (m: string) => void;
}

/** A replica's VM: its QEMU (replaced when a stopped one boots again) and its own overlay disk. */
export interface DockerReplica {
  guest: DockerGuest;
  overlay: string;
}

export class DockerReplicaProvisioner implements ReplicaProvisioner {
  readonly kind = 'docker-clone';
  private readonly replicas = new Map<string, DockerReplica>();
  /** paused and stopped replicas by VM name, with the Vm record they were handed out with */
  private readonly pool = new Map<string, Vm>();
  private macs = 0;

  constructor(private readonly o: DockerReplicaOptions) {}

  /** Pooled replicas of a service: paused ones first (a resume beats a boot), then stopped ones, oldest first. */
  pooled(container?: string): Vm[] {
    const all = [...this.pool.values()].filter((v) => !container || v.spec.container === container);
    return [...all.filter((v) => v.state === 'paused'), ...all.filter((v) => v.state !== 'paused')];
  }

  async acquire(asked: VmSpec): Promise<Acquired & { warm?: boolean }> {
    const reuse = this.pooled(asked.container)[0];
    if (reuse) return reuse.state === 'paused' ? this.resume(reuse) : this.bootStopped(reuse);
    const spec = { ...asked, name: `${asked.name}-${this.o.tag}` };
    const ip = addressOf(spec);
    if (!ip) throw new ToolError('docker-replica', `${spec.name}: no ciel.ip= in the spec's command line: a replica needs its address`);
    const mac = `52:54:00:c1:e2:${(0x20 + this.macs++).toString(16).padStart(2, '0')}`;
    const network = { wrapper: this.o.segment.wrapper, nicArgs: this.o.segment.nicArgs({ name: spec.name } as Vm, mac) };
    let r: Acquired & { warm?: boolean };
    if (this.o.warm) {
      const w = await warmStart(this.o.warm.image, {
        name: spec.name, address: `${ip}/24`, vip: this.o.vip, network, mac, memMiB: spec.memMiB, smp: spec.vcpus,
        webAnswers: () => webAnswers(this.o.segment, ip), readyTimeoutMs: this.o.readyTimeoutMs ?? 420_000, log: this.o.log,
      });
      this.replicas.set(spec.name, { guest: w.guest, overlay: w.overlay });
      r = { vm: this.vmOf(spec, w.guest, w.overlay), clone_ms: w.times.clone_ms, boot_ms: w.times.boot_ms, pooled: false, warm: true };
    } else {
      const t0 = performance.now();
      const clone = await cloneAndBoot({
        name: spec.name,
        keep: [spec.container],
        address: `${ip}/24`,
        files: directRoutingFiles(`${ip}/24`, this.o.vip),
        memMiB: spec.memMiB,
        smp: spec.vcpus,
        network,
        log: this.o.log,
      });
      this.replicas.set(spec.name, { guest: clone.guest, overlay: clone.overlay });
      const clone_ms = clone.times.editMs;
      await this.untilWebAnswers(spec.name, ip, clone.guest, 'its boot', 500);
      r = { vm: this.vmOf(spec, clone.guest, clone.overlay), clone_ms, boot_ms: performance.now() - t0 - clone_ms, pooled: false };
    }
    return r;
  }

  private vmOf(spec: VmSpec, g: DockerGuest, overlay: string): Vm {
    return { name: spec.name, spec: { ...spec }, state: 'running', disk: overlay, serialLog: g.consoleLog, pid: g.pid, ramFile: g.memFile };
  }

  /** The one readiness wait: web answers at the replica's address on the segment (the VM destroyed if not). */
  private async untilWebAnswers(name: string, ip: string, g: DockerGuest, since: string, intervalMs: number): Promise<void> {
    try {
      await waitAnswering(g, () => webAnswers(this.o.segment, ip), { deadline: performance.now() + (this.o.readyTimeoutMs ?? 420_000), what: `web at ${ip} after ${since}`, intervalMs });
    } catch (e) {
      await this.destroy(name);
      throw e;
    }
  }

  /** A paused replica back to work: QMP cont, ready when its service answers at its own address again. */
  private async resume(vm: Vm): Promise<Acquired> {
    const r = this.replicas.get(vm.name);
    const ip = addressOf(vm);
    if (!r || !ip) throw new ToolError('docker-replica', `${vm.name}: pooled replica without its VM or address`);
    this.pool.delete(vm.name);
    const t0 = performance.now();
    try {
      await controlQmp(r.guest, (q) => q.cont());
    } catch (e) {
      await this.destroy(vm.name);
      throw e;
    }
    await this.untilWebAnswers(vm.name, ip, r.guest, 'its resume', 100);
    vm.state = 'running';
    return { vm, clone_ms: 0, boot_ms: performance.now() - t0, pooled: true, reuse: 'resume' };
  }

  /** A stopped replica back to work: booted again on its own overlay (same name, MAC, network). */
  private async bootStopped(vm: Vm): Promise<Acquired> {
    const r = this.replicas.get(vm.name);
    const ip = addressOf(vm);
    if (!r || !ip) throw new ToolError('docker-replica', `${vm.name}: pooled replica without its VM or address`);
    this.pool.delete(vm.name);
    const t0 = performance.now();
    try {
      r.guest = await bootAgain(r.guest, this.o.log);
    } catch (e) {
      await this.destroy(vm.name);
      throw e;
    }
    await this.untilWebAnswers(vm.name, ip, r.guest, 'its boot from the pool', 500);
    Object.assign(vm, { state: 'running', pid: r.guest.pid, ramFile: r.guest.memFile, serialLog: r.guest.consoleLog });
    return { vm, clone_ms: 0, boot_ms: performance.now() - t0, pooled: true, reuse: 'boot' };
  }

  /**
   * Scale-in (the balancer has drained it already): "pause" (the default) stops its vCPUs, "stop" powers
   * it off cleanly and keeps its overlay; either way it waits in the pool for the next scale-out of its
   * service. A replica that cannot be paused or powered off cleanly is destroyed.
   */
  async release(vm: Vm, mode: ReleaseMode = 'pause'): Promise<void> {
    const r = this.replicas.get(vm.name);
    if (r?.guest.alive()) {
      try {
        if (mode === 'pause') {
          await controlQmp(r.guest, (q) => q.stop());
          vm.state = 'paused';
        } else {
          // a killed guest's disk may be unclean: only a clean poweroff goes back to the pool
          if (!(await r.guest.poweroff())) throw new ToolError('docker-replica', `${vm.name} did not power off cleanly`);
          vm.state = 'stopped';
          vm.pid = undefined;
          vm.ramFile = undefined;
        }
        this.pool.set(vm.name, vm);
        this.o.log?.(`${vm.name} ${vm.state} into the pool`);
        return;
      } catch (e) {
        this.o.log?.(`${vm.name}: ${mode} failed (${(e as Error).message}); destroying it`);
      }
    }
    await this.destroy(vm.name);
    vm.state = 'destroyed';
  }

  /** The replica's VM (its current QEMU), running or pooled. */
  clone(name: string): DockerReplica | undefined {
    return this.replicas.get(name);
  }

  private async destroy(name: string): Promise<void> {
    const r = this.replicas.get(name);
    this.replicas.delete(name);
    this.pool.delete(name);
    if (!r) return;
    await r.guest.stop();
    rmSync(r.overlay, { force: true });
  }

  async close(): Promise<void> {
    for (const n of [...this.replicas.keys()]) await this.destroy(n);
  }
}

/**
 * The warm image replicas are restored from: a minimal clone (only web, `address` on the segment, the VIP
 * on lo) booted like a replica, saved once web answers. Its machine (memory, vCPUs, NIC model) must be the
 * replicas' own.
 */
export async function prepareWarmImage(o: {
  segment: L2Segment; vip: string; name: string; address: string; mac: string; memMiB: number; smp: number; dir: string;
  readyTimeoutMs?: number; log: (m: string) => void;
}): Promise<WarmDockerImage> {
  const ip = o.address.split('/')[0]!;
  o.log(`warm image: booting ${o.name} (only web, ${o.address}, VIP on lo) on the segment`);
  const clone = await cloneAndBoot({
    name: o.name, keep: ['web'], address: o.address, files: directRoutingFiles(o.address, o.vip), memMiB: o.memMiB, smp: o.smp,
    network: { wrapper: o.segment.wrapper, nicArgs: o.segment.nicArgs({ name: o.name } as Vm, o.mac) }, log: o.log,
  });
  try {
    await waitAnswering(clone.guest, () => webAnswers(o.segment, ip), { deadline: performance.now() + (o.readyTimeoutMs ?? 420_000), what: `web at ${ip}`, intervalMs: 500 });
    o.log(`warm image: web answers at ${ip} ${((performance.now() - clone.t0) / 1000).toFixed(0)} s after the clone began; saving its memory and freezing its disk`);
    return await saveWarmImage(clone, join(o.dir, 'warm-image'), { log: o.log });
  } finally {
    await clone.stop();
  }
}
