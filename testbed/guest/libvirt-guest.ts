// The busybox test guest (./build.ts) as a libvirt domain, for `ciel monitor --libvirt` tests: the same
// kernel, initramfs and command line as boot.ts, with the console in a file (CIEL-READY is polled there),
// the ground-truth channel on a second UART (unix socket), and a choice of memory backing:
// file (shared), memfd (shared) or libvirt's default, private anonymous RAM (which Ciel cannot read).
// The domain is transient-free: defined, started, and on stop() destroyed and undefined (by its name).
import { existsSync, mkdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { ToolError } from '../../common/errors.ts';
import { buildGuest, makeDockerDisk } from './build.ts';
import { TruthChannel, type Truth } from './truth.ts';

export type MemoryBacking = 'file' | 'memfd' | 'private';

export interface LibvirtGuestOptions {
  /** domain name (unique on the host) */
  name: string;
  uri?: string;
  memory?: MemoryBacking;
  memMiB?: number;
  /** attach the read-only Docker disk (vdb), as boot.ts does */
  dockerDisk?: boolean;
  readyTimeoutMs?: number;
  log?: (line: string) => void;
}

export interface LibvirtGuest {
  domain: string;
  uri: string;
  /** QEMU's pid (libvirt's pid file) */
  pid: number;
  dockerDisk?: string;
  consoleLog: string;
  truth(timeoutMs?: number): Promise<Truth>;
  /** `virsh destroy` + `virsh undefine` of this domain, files removed; idempotent */
  stop(): Promise<void>;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/'/g, '&apos;');

function backingXml(m: MemoryBacking): string {
  if (m === 'private') return '';
  return `<memoryBacking><source type='${m}'/><access mode='shared'/></memoryBacking>`;
}

/** The domain XML (exported for the tests' own checks). */
export function testGuestDomainXml(o: { name: string; memMiB: number; memory: MemoryBacking; kernel: string; initrd: string; disk: string; dockerDisk?: string; consoleLog: string; truthSocket: string }): string {
  // boot.ts's command line, cgroup v2, KASLR on
  const append = 'console=ttyS0 loglevel=4 ciel.cgroup=v2 panic=-1 no_timer_check';
  const docker = o.dockerDisk
    ? `<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${esc(o.dockerDisk)}'/><target dev='vdb' bus='virtio'/><readonly/></disk>`
    : '';
  return `<domain type='qemu'>
  <name>${esc(o.name)}</name>
  <memory unit='KiB'>${o.memMiB * 1024}</memory>
  ${backingXml(o.memory)}
  <vcpu placement='static'>2</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>${esc(o.kernel)}</kernel><initrd>${esc(o.initrd)}</initrd><cmdline>${append}</cmdline></os>
  <features><vmcoreinfo state='on'/></features>
  <cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>
  <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='raw' cache='writeback'/><source file='${esc(o.disk)}'/><target dev='vda' bus='virtio'/></disk>
    ${docker}
    <serial type='file'><source path='${esc(o.consoleLog)}' append='off'/><target port='0'/></serial>
    <serial type='unix'><source mode='bind' path='${esc(o.truthSocket)}'/><target port='1'/></serial>
    <memballoon model='none'/>
  </devices>
  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>
</domain>
`;
}

/** Define and start the test guest as a libvirt domain; resolves once CIEL-READY is on its console. */
export async function startLibvirtGuest(o: LibvirtGuestOptions): Promise<LibvirtGuest> {
  const uri = o.uri ?? 'qemu:///system';
  const log = o.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const t0 = performance.now();
  const say = (m: string) => log(`[libvirt guest ${o.name} +${((performance.now() - t0) / 1000).toFixed(1)}s] ${m}`);
  const virsh = (...a: string[]) => execa('virsh', ['-c', uri, ...a]);
  const image = buildGuest(say);
  const runDir = join(tmpdir(), `ciel-lvguest-${o.name}`);
  rmSync(runDir, { recursive: true, force: true });
  mkdirSync(runDir, { recursive: true });
  const disk = join(runDir, 'disk.raw');
  writeFileSync(disk, '');
  truncateSync(disk, 128 * 1024 * 1024);
  const dockerDisk = o.dockerDisk ? join(runDir, 'docker.ext4') : undefined;
  if (dockerDisk) makeDockerDisk(dockerDisk);
  const consoleLog = join(runDir, 'console.log');
  const truthSocket = join(runDir, 'truth.sock');
  const xmlFile = join(runDir, 'domain.xml');
  writeFileSync(
    xmlFile,
    testGuestDomainXml({ name: o.name, memMiB: o.memMiB ?? 512, memory: o.memory ?? 'file', kernel: image.kernel.vmlinuz, initrd: image.initrd, disk, ...(dockerDisk ? { dockerDisk } : {}), consoleLog, truthSocket }),
  );

  let truthCh: TruthChannel | null = null;
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    truthCh?.close();
    await virsh('destroy', o.name).catch(() => {});
    await virsh('undefine', o.name).catch(() => {});
    rmSync(runDir, { recursive: true, force: true });
  };
  try {
    await virsh('define', xmlFile);
    await virsh('start', o.name);
    say(`started (memory ${o.memory ?? 'file'})`);
    const deadline = performance.now() + (o.readyTimeoutMs ?? 180_000);
    for (;;) {
      const text = existsSync(consoleLog) ? readFileSync(consoleLog, 'latin1') : '';
      if (/^CIEL-READY/m.test(text)) break;
      if (performance.now() > deadline) throw new ToolError('libvirt', `guest ${o.name}: no CIEL-READY in time; console tail:\n${text.slice(-2000)}`);
      const st = (await virsh('domstate', o.name)).stdout.trim();
      if (st !== 'running') throw new ToolError('libvirt', `guest ${o.name} is ${st}; console tail:\n${text.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    say('ready');
    truthCh = await TruthChannel.connect(truthSocket);
    const pid = Number(readFileSync(`/run/libvirt/qemu/${o.name}.pid`, 'utf8').trim());
    return {
      domain: o.name,
      uri,
      pid,
      ...(dockerDisk ? { dockerDisk } : {}),
      consoleLog,
      truth: (ms?: number) => truthCh!.truth(ms),
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
