// A private L2 segment: a network namespace with a bridge; QEMU runs inside the namespace (under
// `ip netns exec`, which execs, so the PID stays QEMU's) and creates its tap there, an ifup script puts
// the tap on the bridge. The host's own network is never touched; all traffic stays in the namespace.

import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { ToolError } from '../../common/errors.ts';
import type { Vm } from '../../provisioners/provisioner.ts';

export interface L2SegmentOptions {
  /** namespace name (default ciel-l2-<pid>) */
  ns?: string;
  /** the namespace's own address on the bridge (the clients' side), CIDR; default 10.77.0.1/24 */
  hostCidr?: string;
  /** where the ifup script goes */
  dir: string;
}

export class L2Segment {
  readonly ns: string;
  readonly hostCidr: string;
  readonly bridge = 'br0';
  private readonly ifup: string;
  private readonly taps = new Map<string, string>();
  private created = false;

  constructor(private readonly o: L2SegmentOptions) {
    this.ns = o.ns ?? `ciel-l2-${process.pid}`;
    this.hostCidr = o.hostCidr ?? '10.77.0.1/24';
    this.ifup = join(o.dir, `ifup-${this.ns}.sh`);
  }

  /** The namespace's address on the bridge (without prefix length). */
  get hostIp(): string {
    return this.hostCidr.split('/')[0]!;
  }

  async create(): Promise<void> {
    mkdirSync(this.o.dir, { recursive: true });
    await ip('netns', 'add', this.ns);
    this.created = true;
    await ip('-n', this.ns, 'link', 'set', 'lo', 'up');
    await ip('-n', this.ns, 'link', 'add', this.bridge, 'type', 'bridge');
    await ip('-n', this.ns, 'addr', 'add', this.hostCidr, 'dev', this.bridge);
    await ip('-n', this.ns, 'link', 'set', this.bridge, 'up');
    writeFileSync(this.ifup, `#!/bin/sh\nip link set "$1" master ${this.bridge}\nip link set "$1" up\n`);
    chmodSync(this.ifup, 0o755);
  }

  /** Command prefix that runs a program inside the namespace (QEMU's `wrapper`). */
  get wrapper(): string[] {
    return ['ip', 'netns', 'exec', this.ns];
  }

  /** The tap device of a VM (one per VM name, created by QEMU inside the namespace). */
  tapOf(vm: Vm | string): string {
    const name = typeof vm === 'string' ? vm : vm.name;
    if (!this.taps.has(name)) this.taps.set(name, `ct${this.taps.size}-${process.pid % 100000}`.slice(0, 15));
    return this.taps.get(name)!;
  }

  /** QEMU arguments for an e1000 NIC on the bridge (the provisioner's `extraArgs`). */
  nicArgs(vm: Vm, mac: string): string[] {
    return ['-netdev', `tap,id=n0,ifname=${this.tapOf(vm)},script=${this.ifup},downscript=no`, '-device', `e1000,netdev=n0,mac=${mac}`];
  }

  /** Run a command inside the namespace. */
  async exec(cmd: string, args: string[], opts: { timeoutMs?: number; reject?: boolean } = {}): Promise<{ stdout: string; exitCode: number }> {
    const r = await execa('ip', ['netns', 'exec', this.ns, cmd, ...args], { reject: opts.reject ?? true, timeout: opts.timeoutMs });
    return { stdout: String(r.stdout), exitCode: r.exitCode ?? -1 };
  }

  /** NIC counters of a VM from the guest's point of view (its tap's, rx/tx swapped). */
  async netStats(vm: Vm): Promise<{ rx_bytes: number; tx_bytes: number }> {
    const t = this.tapOf(vm);
    const r = await this.exec('cat', [`/sys/class/net/${t}/statistics/rx_bytes`, `/sys/class/net/${t}/statistics/tx_bytes`]);
    const [tapRx, tapTx] = r.stdout.trim().split('\n').map(Number);
    return { rx_bytes: tapTx!, tx_bytes: tapRx! };
  }

  async destroy(): Promise<void> {
    if (this.created) await execa('ip', ['netns', 'del', this.ns], { reject: false });
    this.created = false;
    rmSync(this.ifup, { force: true });
  }
}

async function ip(...args: string[]): Promise<void> {
  try {
    await execa('ip', args);
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new ToolError('ip', `${args.join(' ')}: ${(e.stderr || e.message).trim()}`);
  }
}
