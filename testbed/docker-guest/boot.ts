// Boots a real Docker guest (Debian 12, systemd, docker.io) under QEMU: its disk (normally a qcow2 overlay of
// the template), the Debian kernel and initramfs from the template, RAM in a shared /dev/shm file (Ciel reads
// it), a QMP socket, the console to a log file, the control channel on ttyS1 and QEMU's user network with the
// services' ports forwarded to loopback ports on the host. Ready = the control channel answers; whether the
// services serve is asked separately (waitServing), by talking to them.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chooseAccel } from '../../common/accel.ts';
import { ToolError } from '../../common/errors.ts';
import { GuestChannel, type ExecResult } from '../../provisioners/guest-channel.ts';
import { QmpClient } from '../../vmi/qmp.ts';
import { SERVICES, TEMPLATE_ADDRESS } from './recipe.ts';

export type CgroupMode = 'v2' | 'v1';

export interface DockerBootOptions {
  /** the VM's disk (qcow2 or raw), written by the guest */
  disk: string;
  vmlinuz: string;
  initrd: string;
  name: string;
  /** v2: systemd's default (unified); v1: systemd.unified_cgroup_hierarchy=0 (the paper's setup) */
  cgroup?: CgroupMode;
  memMiB?: number;
  smp?: number;
  /** the VM's address on QEMU's user network, as its disk says (default the template's) */
  address?: string;
  /** called right after QEMU is spawned (e.g. to probe the services from then on, not from channel-ready) */
  onSpawned?: (info: { ports: Record<string, number>; t0: number }) => void;
  /**
   * Put the VM on a private L2 segment instead of QEMU's user network: QEMU runs under `wrapper`
   * (`ip netns exec NS`) with these NIC arguments (L2Segment.nicArgs). No host port is forwarded then;
   * the services are reached inside the namespace at the address the disk gives the VM.
   */
  network?: { wrapper: string[]; nicArgs: string[] };
  /** give up when the control channel has not answered after this long (default 300 s) */
  readyTimeoutMs?: number;
  /**
   * Restore instead of boot: QEMU's `-incoming` URI (e.g. `exec:cat FILE`, a memory image saved by
   * warm.ts). Every device argument is the same as a boot's, as migration needs the same devices.
   */
  incoming?: string;
  /** the NIC's MAC on QEMU's user network (on a segment, `network.nicArgs` carry it); default QEMU's */
  mac?: string;
  log?: (line: string) => void;
}

const USER_NET_NIC = 'virtio-net-pci';

/** What a memory image of this VM is only valid on: the same machine (warm.ts checks it at restore). */
export interface DockerMachine {
  memMiB: number;
  smp: number;
  vmlinuz: string;
  initrd: string;
  /** the kernel command line */
  cmdline: string;
  /** the NIC's device model (virtio-net-pci on QEMU's user network, the segment's model on a segment) */
  nicModel: string;
}

export interface DockerGuest {
  name: string;
  pid: number;
  /** the monitor's QMP socket (QMP serves one client per socket) */
  qmpSocket: string;
  /** a second QMP socket for whoever runs the VM (a provisioner pausing it into its pool) */
  controlQmpSocket: string;
  memFile: string;
  disk: string;
  consoleLog: string;
  /** host loopback port forwarded to each service's guest port */
  ports: Record<string, number>;
  /** ms from spawning QEMU to the control channel answering */
  bootMs: number;
  /** with `incoming`: ms from spawning QEMU to QEMU reporting the restored guest running */
  restoredMs?: number;
  machine: DockerMachine;
  /** the options it was started with (bootAgain boots a powered-off VM again with them) */
  options: DockerBootOptions;
  t0: number;
  sh(script: string, timeoutMs?: number): Promise<ExecResult>;
  /** sh() that throws on a non-zero status */
  must(script: string, timeoutMs?: number): Promise<string>;
  alive(): boolean;
  /** clean shutdown (systemctl poweroff), wait for QEMU to exit; false when it had to be killed (disk not clean) */
  poweroff(timeoutMs?: number): Promise<boolean>;
  /** kill QEMU, remove the RAM file and run dir; idempotent */
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
let hooked = false;

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

export async function bootDockerGuest(o: DockerBootOptions): Promise<DockerGuest> {
  const memMiB = dockerMachine(o).memMiB;
  const cgroup = o.cgroup ?? 'v2';
  const log = o.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const t0 = performance.now();
  const say = (m: string) => log(`[docker-guest ${o.name} +${((performance.now() - t0) / 1000).toFixed(1)}s] ${m}`);
  const runDir = join(tmpdir(), `ciel-dguest-${o.name}`);
  rmSync(runDir, { recursive: true, force: true });
  mkdirSync(runDir, { recursive: true });
  const memFile = `/dev/shm/ciel-${o.name}`;
  rmSync(memFile, { force: true });
  const qmpSocket = join(runDir, 'qmp.sock');
  const controlQmpSocket = join(runDir, 'qmp-control.sock');
  const ctlSocket = join(runDir, 'ctl.sock');
  const consoleLog = join(runDir, 'console.log');
  const guestIp = (o.address ?? TEMPLATE_ADDRESS).split('/')[0]!;
  const ports: Record<string, number> = {};
  const fwd: string[] = [];
  for (const s of SERVICES) {
    if (!s.port || o.network) continue;
    ports[s.name] = await freePort();
    fwd.push(`hostfwd=tcp:127.0.0.1:${ports[s.name]}-${guestIp}:${s.port}`);
  }
  const machine = dockerMachine(o);
  const append = machine.cmdline;
  const nicArgs = o.network ? o.network.nicArgs : ['-netdev', `user,id=n0,net=10.0.2.0/24,${fwd.join(',')}`, '-device', `${USER_NET_NIC},netdev=n0${o.mac ? `,mac=${o.mac}` : ''}`];
  const args = [
    '-name', `ciel-${o.name}`,
    ...chooseAccel().args,
    '-smp', String(machine.smp),
    '-m', `${memMiB}M`,
    '-object', `memory-backend-file,id=mem,size=${memMiB}M,mem-path=${memFile},share=on`,
    '-machine', 'pc,memory-backend=mem',
    '-nodefaults', '-no-user-config', '-display', 'none', '-vga', 'none', '-no-reboot',
    '-kernel', o.vmlinuz, '-initrd', o.initrd, '-append', append,
    '-chardev', `file,id=con,path=${consoleLog}`, '-serial', 'chardev:con',
    '-chardev', `socket,id=ctl,path=${ctlSocket},server=on,wait=off`, '-serial', 'chardev:ctl',
    '-qmp', `unix:${qmpSocket},server=on,wait=off`,
    '-qmp', `unix:${controlQmpSocket},server=on,wait=off`,
    '-device', 'vmcoreinfo',
    '-drive', `file=${o.disk},if=virtio,cache=writeback,discard=unmap`,
    ...nicArgs,
    ...(o.incoming ? ['-incoming', o.incoming] : []),
  ];
  say(`${o.incoming ? 'restoring' : 'starting'} QEMU (cgroup ${cgroup}, ${memMiB} MiB, ${guestIp}, ${o.network ? 'on a private L2 segment' : `ports ${JSON.stringify(ports)}`})`);
  // `ip netns exec` execs QEMU, so the PID stays QEMU's (VM-level stats read /proc/<pid>)
  const cmd = o.network ? [...o.network.wrapper, 'qemu-system-x86_64'] : ['qemu-system-x86_64'];
  const child = spawn(cmd[0]!, [...cmd.slice(1), ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  o.onSpawned?.({ ports, t0 });
  live.add(child);
  if (!hooked) {
    hooked = true;
    process.on('exit', () => {
      for (const c of live) if (c.exitCode === null && c.pid) try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ }
    });
  }
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  let exited: string | null = null;
  const exitP = new Promise<void>((resolve) => {
    child.on('exit', (code, sig) => {
      exited = `QEMU exited (code ${code}, signal ${sig})${stderr ? `: ${stderr.trim()}` : ''}`;
      live.delete(child);
      resolve();
    });
    child.on('error', (e) => {
      exited = `cannot run QEMU: ${e.message}`;
      live.delete(child);
      resolve();
    });
  });
  let channel: GuestChannel | undefined;
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    channel?.close();
    if (!exited) {
      child.kill('SIGTERM');
      const t = setTimeout(() => !exited && child.kill('SIGKILL'), 5000);
      await exitP;
      clearTimeout(t);
    }
    rmSync(memFile, { force: true });
    rmSync(runDir, { recursive: true, force: true });
  };
  const tail = () => (existsSync(consoleLog) ? readFileSync(consoleLog, 'latin1').slice(-3000) : '');
  const readyTimeoutMs = o.readyTimeoutMs ?? 300_000;
  let restoredMs: number | undefined;
  try {
    // a restore: the UART's state comes from the image, so a ping sent while the image loads is lost;
    // ping once QEMU says the guest runs (also the restore's own time)
    if (o.incoming) restoredMs = await waitRunning(controlQmpSocket, o.name, readyTimeoutMs, () => exited) - t0;
    if (restoredMs !== undefined) say(`restored: guest running after ${(restoredMs / 1000).toFixed(1)} s`);
    const ch = await GuestChannel.connect(ctlSocket, 10_000);
    // Ping every 5 s, not the channel's default 500 ms: each ping's answer must arrive before the next ping
    // is sent, and a systemd guest under TCG on a loaded host can take seconds to fork the shell. A restored
    // guest's loop is already up: 1 s.
    try {
      await ch.waitReady(readyTimeoutMs, o.incoming ? 1000 : 5000);
      channel = ch;
    } catch {
      ch.close();
      throw new ToolError('qemu', `guest ${o.name}: ${exited ?? `control channel silent after ${readyTimeoutMs} ms`}; console tail:\n${tail()}`);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  const bootMs = performance.now() - t0;
  say(`control channel answers after ${(bootMs / 1000).toFixed(1)} s`);
  const ch = channel;
  const sh = (script: string, timeoutMs = 60_000) => {
    if (exited) return Promise.reject(new ToolError('qemu', `guest ${o.name}: ${exited}`));
    return ch.exec(script, timeoutMs);
  };
  return {
    name: o.name,
    pid: child.pid!,
    qmpSocket,
    controlQmpSocket,
    memFile,
    disk: o.disk,
    consoleLog,
    ports,
    bootMs,
    restoredMs,
    machine,
    options: o,
    t0,
    sh,
    async must(script, timeoutMs) {
      const r = await sh(script, timeoutMs);
      if (r.rc !== 0) throw new ToolError('guest', `${script.slice(0, 200)}: status ${r.rc}: ${r.out.trim().slice(-2000)}`);
      return r.out;
    },
    alive: () => !exited,
    async poweroff(timeoutMs = 120_000) {
      if (exited) {
        await stop();
        return false;
      }
      void ch.exec('systemctl poweroff', 5000).catch(() => {});
      let killed = false;
      const t = setTimeout(() => {
        if (!exited) {
          killed = true;
          child.kill('SIGKILL');
        }
      }, timeoutMs);
      await exitP;
      clearTimeout(t);
      say(killed ? `no clean poweroff within ${timeoutMs} ms: killed` : 'powered off');
      await stop();
      return !killed;
    },
    stop,
  };
}

/** The machine these options make, worked out before anything starts (a restore checks it first). */
export function dockerMachine(o: DockerBootOptions): DockerMachine {
  const cmdline = [
    'root=/dev/vda', 'rw', 'console=ttyS0', 'net.ifnames=0', 'panic=-1', 'no_timer_check', 'loglevel=4',
    ...(o.cgroup === 'v1' ? ['systemd.unified_cgroup_hierarchy=0'] : []),
  ].join(' ');
  return { memMiB: o.memMiB ?? 1024, smp: o.smp ?? 2, vmlinuz: o.vmlinuz, initrd: o.initrd, cmdline, nicModel: o.network ? nicModelOf(o.network.nicArgs) : USER_NET_NIC };
}

/** The NIC's device model in QEMU arguments (`-device MODEL,...`). */
function nicModelOf(nicArgs: string[]): string {
  const i = nicArgs.indexOf('-device');
  return i >= 0 ? nicArgs[i + 1]!.split(',')[0]! : 'none';
}

/** Poll QMP query-status until the incoming guest runs; returns performance.now() then. */
async function waitRunning(socket: string, name: string, timeoutMs: number, exited: () => string | null): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  let q: QmpClient | undefined;
  // QEMU creates the socket a moment after its spawn
  while (!q) {
    q = await QmpClient.connect(socket, 10_000).catch((e: Error) => {
      const gone = exited();
      if (gone) throw new ToolError('qemu', `guest ${name}: ${gone}`);
      if (performance.now() > deadline) throw e;
      return undefined;
    });
    if (!q) await new Promise((r) => setTimeout(r, 20));
  }
  try {
    for (;;) {
      const gone = exited();
      if (gone) throw new ToolError('qemu', `guest ${name}: ${gone}`);
      const s = await q.queryStatus();
      if (s.running) return performance.now();
      // inmigrate: still loading; anything else (postmigrate, internal-error, ...) will not run by itself
      if (s.status !== 'inmigrate' && s.status !== 'prelaunch') throw new ToolError('qemu', `guest ${name}: restore ended in state ${s.status}`);
      if (performance.now() > deadline) throw new ToolError('qemu', `guest ${name}: not running ${timeoutMs} ms after the restore began`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    q.close();
  }
}

/** Commands on the VM's control QMP socket (the monitor holds the other one): pause, resume, migrate. */
export async function controlQmp<T>(g: DockerGuest, f: (q: QmpClient) => Promise<T>): Promise<T> {
  const q = await QmpClient.connect(g.controlQmpSocket, 10_000);
  try {
    return await f(q);
  } finally {
    q.close();
  }
}

/**
 * Boot a powered-off VM again on its own disk (the pooled-stopped way): the same name, disk, network, MAC
 * and machine as before; a fresh boot, never a restore.
 */
export function bootAgain(g: DockerGuest, log?: (line: string) => void): Promise<DockerGuest> {
  if (g.alive()) throw new ToolError('qemu', `guest ${g.name} still runs: power it off before booting it again`);
  return bootDockerGuest({ ...g.options, incoming: undefined, onSpawned: undefined, log: log ?? g.options.log });
}

/** Wait until each named service answers: web an HTTP GET of /, db a redis PING. Returns ms when all did. */
export async function waitServing(g: DockerGuest, names: string[], timeoutMs = 300_000): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  for (const n of names) await waitAnswering(g, () => answers(g, n), { deadline, what: n, intervalMs: 250 });
  return performance.now() - g.t0;
}

/**
 * The one readiness loop: `probe` (e.g. web's HTTP GET at the VM's address) until it answers, failing
 * when the VM exits or `deadline` (performance.now() ms) passes. Returns performance.now() when it answered.
 */
export async function waitAnswering(g: DockerGuest, probe: () => Promise<boolean>, o: { deadline: number; what: string; intervalMs?: number }): Promise<number> {
  for (;;) {
    if (!g.alive()) throw new ToolError('qemu', `guest ${g.name} exited before ${o.what} answered`);
    if (await probe()) return performance.now();
    if (performance.now() > o.deadline) throw new ToolError('guest', `${o.what} on ${g.name} did not answer in time (gave up ${((performance.now() - g.t0) / 1000).toFixed(0)} s after QEMU started)`);
    await new Promise((r) => setTimeout(r, o.intervalMs ?? 250));
  }
}

/**
 * Probe web (HTTP) and db (redis PING) through their forwarded ports from the moment QEMU is spawned
 * (bootDockerGuest's onSpawned), independent of the control channel: resolves with the ms from spawn at
 * which each first answered. For boot-to-serving figures.
 */
export function probeFromSpawn(info: { ports: Record<string, number>; t0: number }, names: ('web' | 'db')[], timeoutMs: number): Promise<Record<string, number>> {
  const deadline = performance.now() + timeoutMs;
  return Promise.all(
    names.map(async (n) => {
      for (;;) {
        if (await probePort(n, info.ports[n]!)) return [n, performance.now() - info.t0] as const;
        if (performance.now() > deadline) throw new ToolError('guest', `${n} did not answer within ${timeoutMs} ms of QEMU's start`);
        await new Promise((r) => setTimeout(r, 250));
      }
    }),
  ).then((e) => Object.fromEntries(e));
}

async function probePort(name: 'web' | 'db', port: number): Promise<boolean> {
  if (name === 'db') return redisPing(port);
  try {
    const r = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(3000) });
    return r.status === 200 && (await r.text()) === 'ciel web\n';
  } catch {
    return false;
  }
}

/** One readiness probe of a service, from the host (web, db) or through the control channel (batch). */
export async function answers(g: DockerGuest, name: string): Promise<boolean> {
  if (name === 'web' || name === 'db') return probePort(name, g.ports[name]!);
  if (name === 'batch') {
    const r = await g.sh(`docker exec batch cat /tmp/log 2>/dev/null | tail -n 1`, 30_000).catch(() => ({ out: '', rc: 1 }));
    return r.rc === 0 && /^\d+ [0-9a-f]{32}/.test(r.out);
  }
  throw new ToolError('guest', `unknown service ${name}`);
}

function redisPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    let buf = '';
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(3000, () => done(false));
    s.on('error', () => done(false));
    // nothing listening in the guest: QEMU's user network accepts the host connection, then closes it
    // cleanly (no error, no data) — without this the probe never settles
    s.on('close', () => done(false));
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => {
      buf += d.toString('latin1');
      if (buf.includes('\r\n')) done(buf.startsWith('+PONG'));
    });
  });
}
