// Boots the test guest under QEMU (TCG) with its RAM in a shared file under /dev/shm, a QMP socket, the
// console on ttyS0 (read from QEMU's stdout) and the ground-truth channel on ttyS1 (a unix socket).
import { chooseAccel } from '../../common/accel.ts';
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, rmSync, truncateSync, writeFileSync, type WriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ToolError } from '../../common/errors.ts';
import { buildGuest, makeDockerDisk, type GuestImage, type GuestKernel } from './build.ts';
import { TruthChannel, type Truth } from './truth.ts';

export type GuestMode = 'cgroup2' | 'cgroup1';

export interface BootOptions {
  /** cgroup layout in the guest (default cgroup2) */
  mode?: GuestMode;
  /** KASLR on (default) or `nokaslr` */
  kaslr?: boolean;
  /** guest RAM in MiB (default 512) */
  memMiB?: number;
  /** vCPUs (default 2) */
  smp?: number;
  /** unique name: /dev/shm/ciel-<name>, run dir, QEMU -name (default test-<pid>-<n>) */
  name?: string;
  /** give up when CIEL-READY has not appeared after this long (default 120 s) */
  readyTimeoutMs?: number;
  /** echo every console line (default: milestones only; env CIEL_GUEST_VERBOSE=1 also turns it on) */
  verbose?: boolean;
  /** where progress goes (default stderr) */
  log?: (line: string) => void;
  /** start none of the standard containers (benchmarks create their own through sh()) */
  bare?: boolean;
  /** let a guest reset reboot it (default: QEMU exits on reset, -no-reboot) */
  reboot?: boolean;
  /** command prefix QEMU runs under, e.g. `ip netns exec NS` to put its NIC on a test bridge */
  wrapper?: string[];
  /** more QEMU arguments (e.g. a NIC) */
  extraArgs?: string[];
  /** the guest kernel (default Debian 6.1.0-56-amd64); guestKernel(release) in ./kernel.ts gives any line's */
  kernel?: GuestKernel;
  /** attach a second, read-only virtio disk: an ext4 image with Docker's config.v2.json of each standard container (build.ts makeDockerDisk) */
  dockerDisk?: boolean;
}

export interface Guest {
  name: string;
  mode: GuestMode;
  kaslr: boolean;
  /** QEMU's pid */
  pid: number;
  qmpSocket: string;
  truthSocket: string;
  /** guest RAM as a host file (file offset = guest-physical address while RAM <= 3583 MiB) */
  memFile: string;
  memBytes: bigint;
  /** the whole console output so far is appended here */
  consoleLog: string;
  runDir: string;
  image: GuestImage;
  /** the Docker disk image on the host (with dockerDisk) */
  dockerDisk?: string;
  /** ms from spawning QEMU to the CIEL-READY line */
  bootMs: number;
  /** ms from spawning QEMU to the first console output */
  firstOutputMs: number;
  /** one ground-truth reading (request/response over ttyS1) */
  truth(timeoutMs?: number): Promise<Truth>;
  /** run a shell command in the guest over the same channel (debugging, test set-up) */
  sh(command: string, timeoutMs?: number): Promise<{ output: string; status: number }>;
  /** true while the QEMU process is alive */
  alive(): boolean;
  /** quit QEMU (SIGTERM, then SIGKILL), remove the /dev/shm file and the run dir; idempotent */
  stop(): Promise<void>;
}

let counter = 0;
const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook() {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // if the test process dies without stop(), do not leave QEMU running (only our own children)
  process.on('exit', () => {
    for (const c of live) if (c.exitCode === null && c.pid) try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ }
  });
}

export async function bootGuest(opts: BootOptions = {}): Promise<Guest> {
  const mode = opts.mode ?? 'cgroup2';
  const kaslr = opts.kaslr ?? true;
  const memMiB = opts.memMiB ?? 512;
  const smp = opts.smp ?? 2;
  const name = opts.name ?? `test-${process.pid}-${++counter}`;
  const verbose = opts.verbose ?? process.env.CIEL_GUEST_VERBOSE === '1';
  const readyTimeoutMs = opts.readyTimeoutMs ?? 120_000;
  const t0 = performance.now();
  const since = () => ((performance.now() - t0) / 1000).toFixed(1).padStart(5);
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const say = (m: string) => log(`[guest ${name} +${since()}s] ${m}`);

  const image = buildGuest((m) => say(m), opts.kernel);
  const runDir = join(tmpdir(), `ciel-guest-${name}`);
  rmSync(runDir, { recursive: true, force: true });
  mkdirSync(runDir, { recursive: true });
  const memFile = `/dev/shm/ciel-${name}`;
  if (existsSync(memFile)) {
    say(`removing stale ${memFile}`);
    rmSync(memFile, { force: true });
  }
  const qmpSocket = join(runDir, 'qmp.sock');
  const truthSocket = join(runDir, 'truth.sock');
  const consoleLog = join(runDir, 'console.log');
  const disk = join(runDir, 'disk.raw');
  writeFileSync(disk, '');
  truncateSync(disk, 128 * 1024 * 1024); // sparse; the disk container uses the first 64 MiB
  const dockerDisk = opts.dockerDisk ? join(runDir, 'docker.ext4') : undefined;
  if (dockerDisk) makeDockerDisk(dockerDisk);

  const append = [
    'console=ttyS0',
    'loglevel=4',
    `ciel.cgroup=${mode === 'cgroup1' ? 'v1' : 'v2'}`,
    'panic=-1',
    'no_timer_check', // TCG on a loaded host: the boot-time IO-APIC timer check can miss ticks and panic
    ...(kaslr ? [] : ['nokaslr']),
    ...(opts.bare ? ['ciel.bare'] : []),
  ].join(' ');
  const args = [
    '-name', `ciel-${name}`,
    ...chooseAccel().args, // TCG here: /dev/kvm is a software backend on this machine kind
    '-smp', String(smp),
    '-m', `${memMiB}M`,
    '-object', `memory-backend-file,id=mem,size=${memMiB}M,mem-path=${memFile},share=on`,
    '-machine', 'pc,memory-backend=mem',
    '-nodefaults', '-no-user-config', '-display', 'none', '-vga', 'none',
    ...(opts.reboot ? [] : ['-no-reboot']),
    '-kernel', image.kernel.vmlinuz,
    '-initrd', image.initrd,
    '-append', append,
    '-chardev', 'stdio,id=con,signal=off',
    '-serial', 'chardev:con',
    '-chardev', `socket,id=truth,path=${truthSocket},server=on,wait=off`,
    '-serial', 'chardev:truth',
    '-qmp', `unix:${qmpSocket},server=on,wait=off`,
    '-device', 'vmcoreinfo',
    '-drive', `file=${disk},format=raw,if=virtio,cache=writeback`,
    // second virtio disk (vdb, after vda in PCI order), read-only: the guest cannot change what the host reads
    ...(dockerDisk ? ['-drive', `file=${dockerDisk},format=raw,if=virtio,readonly=on`] : []),
    ...(opts.extraArgs ?? []),
  ];
  say(`starting qemu-system-x86_64 (${mode}, kaslr ${kaslr ? 'on' : 'off'}, ${memMiB} MiB, ${smp} vCPUs, initrd ${image.key})`);
  let child: ChildProcess;
  try {
    // a wrapper such as `ip netns exec NS` execs QEMU in place: the pid stays QEMU's
    const [cmd, ...pre] = [...(opts.wrapper ?? []), 'qemu-system-x86_64'];
    child = spawn(cmd, [...pre, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (e) {
    throw new ToolError('qemu-system-x86_64', (e as Error).message);
  }
  installExitHook();
  live.add(child);
  const out: WriteStream = createWriteStream(consoleLog);
  let stderrText = '';
  let firstOutputMs = -1;
  let exited: string | null = null;
  const tail: string[] = [];
  let lineBuf = '';
  let onLine: ((l: string) => void) | null = null;
  child.stdout!.setEncoding('latin1');
  child.stdout!.on('data', (d: string) => {
    if (firstOutputMs < 0) {
      firstOutputMs = performance.now() - t0;
      say('first console output');
    }
    out.write(d);
    lineBuf += d;
    let i;
    while ((i = lineBuf.indexOf('\n')) >= 0) {
      const line = lineBuf.slice(0, i).replace(/\r$/, '');
      lineBuf = lineBuf.slice(i + 1);
      tail.push(line);
      if (tail.length > 40) tail.shift();
      if (verbose) say(`| ${line}`);
      onLine?.(line);
    }
  });
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => {
    stderrText += d;
    if (verbose) say(`qemu: ${d.trimEnd()}`);
  });
  const exitPromise = new Promise<void>((resolve) => {
    child.on('exit', (code, sig) => {
      exited = `QEMU exited (code ${code}, signal ${sig})${stderrText ? `: ${stderrText.trim()}` : ''}`;
      live.delete(child);
      resolve();
    });
    child.on('error', (err) => {
      exited = `cannot run qemu-system-x86_64: ${err.message}`;
      live.delete(child);
      resolve();
    });
  });

  let stopped = false;
  let truthCh: TruthChannel | null = null;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    truthCh?.close();
    if (!exited && child.pid) {
      child.kill('SIGTERM');
      const t = setTimeout(() => {
        if (!exited && child.pid) child.kill('SIGKILL');
      }, 5000);
      await exitPromise;
      clearTimeout(t);
    }
    out.end();
    rmSync(memFile, { force: true });
    rmSync(runDir, { recursive: true, force: true });
  };

  // wait for CIEL-READY
  let readyLine = '';
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`guest ${name}: no CIEL-READY within ${readyTimeoutMs} ms; console tail:\n${tail.join('\n')}`)),
        readyTimeoutMs,
      );
      onLine = (l) => {
        if (l.startsWith('ciel-init:')) say(l);
        if (/Kernel panic/.test(l)) say(l);
        if (l.startsWith('CIEL-READY')) {
          readyLine = l;
          clearTimeout(timer);
          resolve();
        }
      };
      void exitPromise.then(() => {
        clearTimeout(timer);
        reject(new Error(`guest ${name}: ${exited}; console tail:\n${tail.join('\n')}`));
      });
    });
  } catch (e) {
    await stop();
    throw e;
  }
  onLine = (l) => {
    if (l.startsWith('ciel-init:') || /Kernel panic|Oops|BUG:/.test(l)) say(l);
  };
  const bootMs = performance.now() - t0;
  say(`ready in ${(bootMs / 1000).toFixed(1)} s (${readyLine})`);
  try {
    truthCh = await TruthChannel.connect(truthSocket);
    const tp = performance.now();
    for (let i = 0; ; i++) {
      try {
        await truthCh.ping(3000);
        break;
      } catch (e) {
        if (i >= 4) throw e;
      }
    }
    say(`truth channel answers (ping ${(performance.now() - tp).toFixed(0)} ms)`);
  } catch (e) {
    await stop();
    throw e;
  }

  return {
    name,
    mode,
    kaslr,
    pid: child.pid!,
    qmpSocket,
    truthSocket,
    memFile,
    memBytes: BigInt(memMiB) * 1024n * 1024n,
    consoleLog,
    runDir,
    image,
    ...(dockerDisk ? { dockerDisk } : {}),
    bootMs,
    firstOutputMs,
    truth: (timeoutMs?: number) => {
      if (exited) return Promise.reject(new Error(`guest ${name}: ${exited}`));
      return truthCh!.truth(timeoutMs);
    },
    sh: (command: string, timeoutMs?: number) => {
      if (exited) return Promise.reject(new Error(`guest ${name}: ${exited}`));
      return truthCh!.sh(command, timeoutMs);
    },
    alive: () => !exited,
    stop,
  };
}

// `tsx testbed/guest/boot.ts [cgroup1]` boots a guest, prints one truth reading and the boot time, and stops.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const mode = (process.argv[2] as GuestMode) || 'cgroup2';
  const g = await bootGuest({ mode, name: `manual-${process.pid}` });
  try {
    for (const cmd of process.argv.slice(3)) {
      const t = performance.now();
      const r = await g.sh(cmd);
      console.log(`$ ${cmd}  [status ${r.status}, ${(performance.now() - t).toFixed(0)} ms]\n${r.output}`);
    }
    const t = await g.truth();
    console.log(JSON.stringify({ bootMs: Math.round(g.bootMs), truth: t }, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 1));
    await new Promise((r) => setTimeout(r, 3000));
    const t2 = await g.truth();
    console.log(JSON.stringify(t2.containers.map((c) => [c.name, c.cpu_usage_ns, c.memory_usage_bytes, c.io_write_bytes, c.net_tx_bytes])));
    console.log('truth latency ms', t2.hostReceivedMs - t2.hostSentMs);
  } finally {
    await g.stop();
  }
}
