// The load balancer: Linux IPVS (LVS) with direct routing, as in the paper — run where it runs in the
// paper, in a small load-balancer VM, because this machine kind's host kernel has no netfilter/IPVS.
//
// The LB VM: Debian's 6.1 kernel (direct kernel boot, TCG), a busybox initramfs with ip_vs, ip_vs_rr,
// crc32c_generic, e1000 and their dependencies (resolved from modinfo), and Debian's `ipvsadm` with its
// shared libraries (libnl-genl-3, libnl-3, libpopt, libc, ld.so). It sits on a private L2 segment
// (L2Segment: a bridge in a network namespace; QEMU runs inside it), owns the virtual IP on its eth0 and
// answers ARP for it. Real servers hold the VIP on lo with arp_ignore=1/arp_announce=2 (the test guest's
// `ciel.vip=`), so IPVS rewrites only the destination MAC and the replies go straight to the client.
//
// The host controls IPVS through the VM's control channel (second UART, guest.ts CTL_SCRIPT;
// QemuDirectProvisioner.exec): `ipvsadm -A/-a/-e/-d ...`. Scale-out adds a real server (`-g`, weight 1);
// scale-in drains it: weight 0 (the rr scheduler sends it nothing new), wait until its ActiveConn is 0
// (established connections ended; InActConn entries are closing ones, which IPVS keeps forwarding to the
// server even after it is deleted), then delete it. counts() reads `ipvsadm -Ln --stats --exact`: the
// connections IPVS scheduled per real server (= requests for one-request HTTP connections), cumulative
// across removals.

import { existsSync, writeFileSync, renameSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { cacheDir } from '../../common/cache.ts';
import { ToolError } from '../../common/errors.ts';
import type { Backend, LoadBalancer } from '../../controller/autoscaler.ts';
import { busyboxInitramfs } from '../minimal-guest.ts';
import { QemuDirectProvisioner } from '../../provisioners/qemu-direct.ts';
import { ProvisionError } from '../../provisioners/errors.ts';
import type { Vm } from '../../provisioners/provisioner.ts';
import { abortableSleep as sleep } from '../../common/sleep.ts';
import { ensureKernel, initPreamble, resolveModules } from '../guest-images.ts';
import type { L2Segment } from './netns.ts';

export const LB_MODULES = ['e1000', 'crc32c_generic', 'ip_vs', 'ip_vs_rr'];

const LB_INIT = `${initPreamble()}ip=; vip=
for w in $(cat /proc/cmdline); do
  case "$w" in
    ciel.ip=*) ip="\${w#ciel.ip=}";;
    ciel.vip=*) vip="\${w#ciel.vip=}";;
  esac
done
ip link set lo up
ip link set eth0 up
ip addr add "$ip" dev eth0
ip addr add "$vip/32" dev eth0
# FIN_WAIT entries expire after 2 s instead of 2 min (drain bookkeeping); established: 900 s
ipvsadm --set 900 2 60
ciel-ctl </dev/null >/dev/null 2>&1 &
echo "CIEL-LB-READY $(ipvsadm -v 2>&1 | head -1)"
while :; do sleep 3600; done
`;

function lddLibs(bin: string): string[] {
  const out = execFileSync('ldd', [bin], { encoding: 'utf8' });
  const libs: string[] = [];
  for (const line of out.split('\n')) {
    const m = line.match(/=>\s+(\/\S+)/) ?? line.match(/^\s+(\/\S+)\s+\(/);
    if (m) libs.push(m[1]!);
  }
  return libs;
}

/** The LB VM's kernel and initramfs (built once, cached by content). */
export function ensureLbImage(): { kernel: string; initrd: string; disk: string } {
  const k = ensureKernel();
  const modules = resolveModules(k.modulesDir, LB_MODULES);
  const ipvsadm = ['/usr/sbin/ipvsadm', '/sbin/ipvsadm'].find(existsSync);
  if (!ipvsadm) throw new ToolError('ipvsadm', 'ipvsadm is not installed (apt-get install -y ipvsadm)');
  const libs = lddLibs(ipvsadm);
  const h = createHash('sha256');
  h.update(LB_INIT);
  h.update(modules.join('\n'));
  for (const f of [ipvsadm, ...libs]) h.update(`${f}:${readFileSync(f).length}`);
  const dir = cacheDir('lb');
  const initrd = join(dir, `initrd-lb-${h.digest('hex').slice(0, 12)}.cpio`);
  if (!existsSync(initrd)) {
    const files: Record<string, [Buffer | string, number]> = { init: [LB_INIT, 0o755], 'sbin/ipvsadm': [readFileSync(ipvsadm), 0o755] };
    for (const lib of libs) {
      const dest = lib.startsWith('/lib64/') ? lib.slice(1) : `lib/x86_64-linux-gnu/${lib.split('/').pop()}`;
      files[dest] = [readFileSync(lib), 0o755];
    }
    const tmp = `${initrd}.tmp-${process.pid}`;
    writeFileSync(tmp, busyboxInitramfs(k.modulesDir, modules, files));
    renameSync(tmp, initrd);
  }
  const disk = join(dir, 'lb-empty.qcow2');
  if (!existsSync(disk)) execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '1M']);
  return { kernel: k.vmlinuz, initrd, disk };
}

export interface IpvsVmOptions {
  /** the private L2 segment the LB VM and the real servers share */
  segment: L2Segment;
  /** the LB VM's own address, CIDR (e.g. 10.77.0.10/24) */
  cidr: string;
  /** the virtual IP clients use */
  vip: string;
  /** service name → port of its virtual service on the VIP; services not listed use defaultPort */
  ports?: Record<string, number>;
  /** default 80 */
  defaultPort?: number;
  /** IPVS scheduler; default rr */
  scheduler?: string;
  /** a backend's real-server address when Backend.address is not set (e.g. from the provisioner's records) */
  addressOf?: (b: Backend) => string | undefined | Promise<string | undefined>;
  /** removeBackend waits at most this long for connections to end before deleting; default 30 000 ms */
  drainTimeoutMs?: number;
  /** LB VM name; default ciel-lb-<pid> */
  name?: string;
  /** where the LB VM's files go; default cacheDir('lb', 'vm') */
  dir?: string;
  memMiB?: number;
}

export interface RealServer {
  service: string;
  address: string;
  port: number;
  weight: number;
  activeConns: number;
  inactiveConns: number;
}

export class IpvsVmBalancer implements LoadBalancer {
  private readonly prov: QemuDirectProvisioner;
  private vm?: Vm;
  private readonly services = new Set<string>();
  /** connections counted for real servers that were deleted (IPVS forgets their stats) */
  private readonly retired = new Map<string, number>();
  /** backend VM name → real-server address it was added with */
  private readonly addrs = new Map<string, string>();
  private readonly img: { kernel: string; initrd: string };
  boot_ms = 0;

  constructor(private readonly o: IpvsVmOptions) {
    const img = ensureLbImage();
    this.prov = new QemuDirectProvisioner({
      template: img.disk,
      dir: o.dir ?? cacheDir('lb', 'vm'),
      wrapper: o.segment.wrapper,
      extraArgs: (vm, mac) => o.segment.nicArgs(vm, mac),
      ramDir: null,
    });
    this.img = img;
  }

  get vip(): string {
    return this.o.vip;
  }

  portOf(service: string): number {
    return this.o.ports?.[service] ?? this.o.defaultPort ?? 80;
  }

  /** Boot the LB VM and wait until its control channel answers. */
  async start(): Promise<{ boot_ms: number }> {
    const t0 = performance.now();
    const a = await this.prov.acquire({
      name: this.o.name ?? `ciel-lb-${process.pid}`,
      container: 'ipvs',
      vcpus: 1,
      memMiB: this.o.memMiB ?? 160,
      kernel: this.img.kernel,
      initrd: this.img.initrd,
      cmdline: `console=ttyS0 quiet panic=-1 no_timer_check rdinit=/init ciel.ip=${this.o.cidr} ciel.vip=${this.o.vip}`,
      disk: 'overlay',
      ready: 'CIEL-LB-READY',
    });
    this.vm = a.vm;
    await this.prov.channel(a.vm);
    this.boot_ms = performance.now() - t0;
    return { boot_ms: this.boot_ms };
  }

  /** The LB VM (for stats, logs). */
  get lbVm(): Vm | undefined {
    return this.vm;
  }

  /** Run ipvsadm in the LB VM; throws on a non-zero exit. */
  async ipvsadm(args: string[]): Promise<string> {
    if (!this.vm) throw new ProvisionError(this.o.name ?? `ciel-lb-${process.pid}`, 'ipvsadm', 'the LB VM is not started');
    const q = (x: string) => `'${x.replace(/'/g, `'\\''`)}'`;
    const r = await this.prov.exec(this.vm, `ipvsadm ${args.map(q).join(' ')}`);
    if (r.rc !== 0) throw new ToolError('ipvsadm', `${args.join(' ')}: ${r.out.trim()} (exit ${r.rc})`);
    return r.out;
  }

  private vs(service: string): string {
    return `${this.o.vip}:${this.portOf(service)}`;
  }

  private async ensureService(service: string): Promise<void> {
    if (this.services.has(service)) return;
    const port = this.portOf(service);
    // several services may share a port (one virtual service then); create it once
    const existing = await this.ipvsadm(['-Ln']);
    if (!new RegExp(`^TCP\\s+${this.o.vip.replace(/\./g, '\\.')}:${port}\\s`, 'm').test(existing)) await this.ipvsadm(['-A', '-t', this.vs(service), '-s', this.o.scheduler ?? 'rr']);
    this.services.add(service);
  }

  private async address(b: Backend): Promise<string> {
    const a = b.address ?? this.addrs.get(b.vm) ?? (await this.o.addressOf?.(b));
    if (!a) throw new ProvisionError(b.vm, 'address', `no address for backend ${b.vm} (${b.container}): set Backend.address or IpvsVmOptions.addressOf`);
    return a.split('/')[0]!;
  }

  /** Scale-out: a new real server, direct routing, weight 1. Re-adding a drained one restores its weight. */
  async addBackend(service: string, b: Backend): Promise<void> {
    await this.ensureService(service);
    const rip = await this.address(b);
    const port = this.portOf(service);
    const rs = (await this.realServers()).find((r) => r.address === rip && r.port === port);
    await this.ipvsadm([rs ? '-e' : '-a', '-t', this.vs(service), '-r', `${rip}:${port}`, '-g', '-w', '1']);
    this.addrs.set(b.vm, rip);
  }

  /** Weight 0: no new connections go to the backend; existing ones continue. */
  async drain(service: string, b: Backend): Promise<void> {
    const rip = await this.address(b);
    await this.ipvsadm(['-e', '-t', this.vs(service), '-r', `${rip}:${this.portOf(service)}`, '-g', '-w', '0']);
  }

  /**
   * Scale-in: drain (weight 0), wait until the backend has no established connection (at most
   * drainTimeoutMs), then delete it. Returns how long the drain took and whether it timed out.
   */
  async removeBackend(service: string, b: Backend): Promise<void> {
    await this.removeBackendTimed(service, b);
  }

  async removeBackendTimed(service: string, b: Backend): Promise<{ drain_ms: number; timedOut: boolean }> {
    const rip = await this.address(b);
    const port = this.portOf(service);
    const t0 = performance.now();
    await this.drain(service, b);
    let timedOut = false;
    for (;;) {
      const rs = (await this.realServers()).find((r) => r.address === rip && r.port === port);
      if (!rs || rs.activeConns === 0) break;
      if (performance.now() - t0 > (this.o.drainTimeoutMs ?? 30_000)) {
        timedOut = true;
        break;
      }
      await sleep(200);
    }
    const before = (await this.stats()).get(`${rip}:${port}`) ?? 0;
    await this.ipvsadm(['-d', '-t', this.vs(service), '-r', `${rip}:${port}`]);
    this.retired.set(`${rip}:${port}`, (this.retired.get(`${rip}:${port}`) ?? 0) + before);
    this.addrs.delete(b.vm);
    return { drain_ms: performance.now() - t0, timedOut };
  }

  /** Real servers with weight and connection counts (`ipvsadm -Ln`). */
  async realServers(): Promise<RealServer[]> {
    const out = await this.ipvsadm(['-Ln']);
    const res: RealServer[] = [];
    let vs: { port: number } | undefined;
    for (const line of out.split('\n')) {
      const v = /^TCP\s+(\S+):(\d+)\s/.exec(line);
      if (v) {
        vs = { port: Number(v[2]) };
        continue;
      }
      const r = /^\s+->\s+(\d+\.\d+\.\d+\.\d+):(\d+)\s+\S+\s+(\d+)\s+(\d+)\s+(\d+)/.exec(line);
      if (r && vs) {
        const port = Number(r[2]);
        const service = [...this.services].find((s) => this.portOf(s) === vs!.port) ?? String(vs.port);
        res.push({ service, address: r[1]!, port, weight: Number(r[3]), activeConns: Number(r[4]), inactiveConns: Number(r[5]) });
      }
    }
    return res;
  }

  /**
   * Connections per real server (`ADDR:PORT`, current real servers only). IPVS folds its per-CPU
   * counters into the totals it reports only in its 2 s estimator tick, so a read right after traffic
   * lags: read until two reads one tick apart agree (at most `maxTicks` ticks).
   */
  private async stats(maxTicks = 3): Promise<Map<string, number>> {
    let prev = await this.statsOnce();
    for (let i = 0; i < maxTicks; i++) {
      await sleep(2100);
      const cur = await this.statsOnce();
      if (cur.size === prev.size && [...cur].every(([k, v]) => prev.get(k) === v)) return cur;
      prev = cur;
    }
    return prev;
  }

  private async statsOnce(): Promise<Map<string, number>> {
    const out = await this.ipvsadm(['-Ln', '--stats', '--exact']);
    const m = new Map<string, number>();
    for (const line of out.split('\n')) {
      const r = /^\s+->\s+(\d+\.\d+\.\d+\.\d+:\d+)\s+(\d+)/.exec(line);
      if (r) m.set(r[1]!, (m.get(r[1]!) ?? 0) + Number(r[2]));
    }
    return m;
  }

  /**
   * Requests per backend address (`ADDR:PORT` → connections IPVS scheduled to it since it was first
   * added; one HTTP request per connection), including backends removed since.
   */
  async counts(): Promise<Record<string, number>> {
    const now = await this.stats();
    const res: Record<string, number> = {};
    for (const [k, v] of this.retired) res[k] = v;
    for (const [k, v] of now) res[k] = (res[k] ?? 0) + v;
    return res;
  }

  /** Stop and delete the LB VM. */
  async close(): Promise<void> {
    await this.prov.close();
    this.vm = undefined;
    this.services.clear();
  }
}
