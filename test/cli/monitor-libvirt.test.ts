// `ciel monitor --libvirt DOMAIN` (and `--config` / `ciel autoscale` with a libvirt VM) as an operator runs
// it, against the busybox test guest defined as a real libvirt domain with file-backed shared memory:
// libvirt holds the QMP socket, Ciel goes through libvirt's monitor passthrough. One guest boot for the
// file; a second domain with libvirt's default private RAM is only started paused (no boot) for its error.
// Every domain defined here is undefined again, libvirtd/virtlogd are stopped only if this file started them.
import { execa } from 'execa';
import { existsSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildMonitor } from '../../compiler/build.ts';
import { LibvirtDaemon } from '../../provisioners/libvirt-daemon.ts';
import { buildGuest, DOCKER_DISK_INFO } from '../../testbed/guest/build.ts';
import { GUEST_CONTAINERS } from '../../testbed/guest/containers.ts';
import { startLibvirtGuest, testGuestDomainXml, type LibvirtGuest } from '../../testbed/guest/libvirt-guest.ts';
import type { ContainerSample, Sample } from '../../vmi/sample.ts';
import { parseEventLine } from '../../vmi/libvirt-qmp.ts';
import { parseDomainXml } from '../../vmi/libvirt-domain.ts';

const RELEASE = '6.1.0-56-amd64';
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CIEL = join(ROOT, 'bin', 'ciel.mjs');
const IDS = GUEST_CONTAINERS.map((c) => c.id).sort();
const NAME_OF = new Map(GUEST_CONTAINERS.map((c) => [c.id, DOCKER_DISK_INFO[c.name].name]));
const haveLibvirt = existsSync('/usr/sbin/libvirtd') && existsSync('/usr/bin/virsh');

type NamedSample = Sample & { vm: string; containers: (ContainerSample & { image?: string })[] };

const ciel = (args: string[], timeout = 120_000) => execa(process.execPath, [CIEL, ...args], { cwd: ROOT, reject: false, timeout });
const mon = (args: string[]) => ciel(['monitor', ...args]);
const samplesOf = (stdout: string) =>
  stdout
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as NamedSample);

function expectGuestContainers(s: NamedSample, names = true) {
  expect(s.containers.map((c) => c.id).sort()).toEqual(IDS);
  for (const c of s.containers) {
    if (names) expect(c.name).toBe(NAME_OF.get(c.id));
    expect(c.cgroup).toBe(GUEST_CONTAINERS.find((g) => g.id === c.id)!.cgroup);
    expect(Number.isSafeInteger(c.cpu_usage_ns) && c.cpu_usage_ns >= 0).toBe(true);
  }
}

describe('pure parts', () => {
  it('virsh qemu-monitor-event lines become QMP events', () => {
    expect(parseEventLine("event RESET at 1796457697.654186 for domain 'a b': {\"guest\":false,\"reason\":\"host-qmp-system-reset\"}")).toEqual({
      event: 'RESET',
      data: { guest: false, reason: 'host-qmp-system-reset' },
    });
    expect(parseEventLine("2026-12-05 08:00:58.941+0000: event STOP for domain 'x': <null>")).toEqual({ event: 'STOP' });
    expect(parseEventLine('welcome')).toBeNull();
  });
  it('domain XML: RAM size, machine, memory backing', () => {
    expect(parseDomainXml("<memory unit='KiB'>524288</memory><type arch='x86_64' machine='pc-q35-7.2'>hvm</type>")).toEqual({
      ramBytes: 512n << 20n,
      machine: 'q35',
      backing: 'no <memoryBacking>',
    });
    expect(parseDomainXml("<memory unit='GiB'>4</memory><memoryBacking>\n<source type='file'/>\n</memoryBacking>").backing).toBe("<source type='file'/> (no <access mode='shared'/>)");
  });
});

describe.skipIf(!haveLibvirt)('ciel monitor --libvirt (subprocess, the test guest as a libvirt domain)', () => {
  let daemon: LibvirtDaemon;
  let guest: LibvirtGuest;
  let tmp: string;
  const DOMAIN = `ciel-lvmon-${process.pid}`;
  const PRIVATE = `ciel-lvmon-private-${process.pid}`;
  let target: string[];

  beforeAll(async () => {
    await buildMonitor({ release: RELEASE, log: (l) => process.stderr.write(`[build] ${l}\n`) });
    daemon = await LibvirtDaemon.ensure();
    tmp = mkdtempSync(join(tmpdir(), 'ciel-lvmon-'));
    guest = await startLibvirtGuest({ name: DOMAIN, memory: 'file', dockerDisk: true });
    target = ['--libvirt', DOMAIN, '--kernel', RELEASE, '--disk', guest.dockerDisk!, '--vm', 'g'];
  }, 900_000);

  afterAll(async () => {
    await guest?.stop();
    await execa('virsh', ['-c', 'qemu:///system', 'destroy', PRIVATE], { reject: false });
    await execa('virsh', ['-c', 'qemu:///system', 'undefine', PRIVATE], { reject: false });
    await daemon?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }, 120_000);

  it('--json --count 2 gives the known containers, names and images from the disk; libvirt keeps the domain running', async () => {
    const t0 = performance.now();
    const r = await mon([...target, '--json', '--count', '2', '--interval', '500ms']);
    expect(r.exitCode, r.stderr).toBe(0);
    const samples = samplesOf(r.stdout);
    expect(samples).toHaveLength(2);
    for (const s of samples) {
      expect(s.vm).toBe('g');
      expect(s.kernel).toBe(RELEASE);
      expectGuestContainers(s);
      expect(s.pause_us).toBeUndefined();
    }
    console.log(`monitor --libvirt --count 2: ${Math.round(performance.now() - t0)} ms`);
    expect((await execa('virsh', ['domstate', DOMAIN])).stdout.trim()).toBe('running');
  });

  it('--consistent pauses the vCPUs through libvirt around each sample and resumes them', async () => {
    const r = await mon([...target, '--json', '--count', '3', '--interval', '300ms', '--consistent']);
    expect(r.exitCode, r.stderr).toBe(0);
    const samples = samplesOf(r.stdout);
    expect(samples).toHaveLength(3);
    for (const s of samples) {
      expect(s.pause_us).toBeGreaterThan(s.sample_us);
      expectGuestContainers(s);
    }
    console.log(`--consistent through libvirt: pause_us ${samples.map((s) => s.pause_us).join(', ')}`);
    expect((await execa('virsh', ['domstate', DOMAIN])).stdout.trim()).toBe('running');
  });

  it('without --kernel or --vm: the kernel is read from the guest, samples are named after the domain', async () => {
    const r = await mon(['--libvirt', DOMAIN, '--connect', 'qemu:///system', '--json', '--count', '1']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toContain(`kernel ${RELEASE} (read from the guest`);
    const [s] = samplesOf(r.stdout);
    expect(s!.vm).toBe(DOMAIN);
    expectGuestContainers(s!, false);
  });

  it('a --config entry {"libvirt": DOMAIN} works like --libvirt', async () => {
    const f = join(tmp, 'vms.json');
    writeFileSync(f, JSON.stringify({ vms: [{ name: 'cfg-g', libvirt: DOMAIN, connect: 'qemu:///system', kernel: RELEASE, disk: guest.dockerDisk, interval: 0.3 }] }));
    const r = await mon(['--config', f, '--json', '--count', '2', '--consistent']);
    expect(r.exitCode, r.stderr).toBe(0);
    const samples = samplesOf(r.stdout);
    expect(samples).toHaveLength(2);
    for (const s of samples) {
      expect(s.vm).toBe('cfg-g');
      expect(s.pause_us).toBeGreaterThan(0);
      expectGuestContainers(s);
    }
  });

  it('ciel autoscale with a libvirt VM and no QMP socket: VM level from domstats, containers through the passthrough', async () => {
    const f = join(tmp, 'autoscale.json');
    writeFileSync(
      f,
      JSON.stringify({
        vms: [{ name: 'origin', libvirt: DOMAIN, kernel: RELEASE }],
        // the guest's burner keeps the VM over this threshold: every interval samples the containers, paused
        policy: { policies: [{ resource: 'cpu', vmThreshold: 0.01, target: 0.5 }] },
      }),
    );
    const r = await ciel(['autoscale', '--config', f, '--dry-run', '--json', '--count', '3', '--interval', '1s']);
    expect(r.exitCode, r.stderr).toBe(0);
    const events = samplesOf(r.stdout) as unknown as { type: string; vm?: string; containers?: number }[];
    const sampled = events.filter((e) => e.type === 'containers_sampled');
    expect(sampled.length, r.stdout).toBeGreaterThan(0);
    for (const e of sampled) {
      expect(e.vm).toBe('origin');
      expect(e.containers).toBe(IDS.length);
    }
    expect((await execa('virsh', ['domstate', DOMAIN])).stdout.trim()).toBe('running');
  });

  it('a domain with private RAM: exit 1, the domain named and the XML to add', async () => {
    const img = buildGuest();
    const disk = join(tmp, 'private.raw');
    writeFileSync(disk, '');
    truncateSync(disk, 16 << 20);
    const xml = join(tmp, 'private.xml');
    writeFileSync(
      xml,
      testGuestDomainXml({ name: PRIVATE, memMiB: 256, memory: 'private', kernel: img.kernel.vmlinuz, initrd: img.initrd, disk, consoleLog: join(tmp, 'p.log'), truthSocket: join(tmp, 'p.sock') }),
    );
    await execa('virsh', ['define', xml]);
    await execa('virsh', ['start', '--paused', PRIVATE]); // a QEMU with its RAM, no guest boot
    const r = await mon(['--libvirt', PRIVATE, '--count', '1', '--json']);
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain(`libvirt domain ${PRIVATE} (qemu:///system): its RAM is private anonymous memory`);
    expect(r.stderr).toContain("Add <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>");
    // and it was left as it was: paused, by its operator
    expect((await execa('virsh', ['domstate', PRIVATE])).stdout.trim()).toBe('paused');
    await execa('virsh', ['destroy', PRIVATE]);
    // a defined domain that does not run
    const off = await mon(['--libvirt', PRIVATE, '--count', '1']);
    expect(off.exitCode).toBe(1);
    expect(off.stderr).toContain(`libvirt domain ${PRIVATE} (qemu:///system): the domain is shut off: start it first`);
    await execa('virsh', ['undefine', PRIVATE]);
  });

  it('an unknown domain, a remote URI and bad options: exit 1 with a clear message', async () => {
    const r = await mon(['--libvirt', 'ciel-no-such-domain', '--count', '1']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr.trim()).toBe("ciel: cannot attach: libvirt domain ciel-no-such-domain (qemu:///system): no such domain (virsh: failed to get domain 'ciel-no-such-domain')");
    const remote = await mon(['--libvirt', DOMAIN, '--connect', 'qemu+ssh://elsewhere/system', '--count', '1']);
    expect(remote.exitCode).toBe(1);
    expect(remote.stderr).toContain('the URI names a remote host (elsewhere)');
    const usage = await mon(['--connect', 'qemu:///system', '--count', '1']);
    expect(usage.exitCode).toBe(1);
    expect(usage.stderr.trim()).toBe('ciel: --connect goes with --libvirt DOMAIN (in a config: "connect" per VM)');
    const two = await mon(['--libvirt', DOMAIN, '--xen', '3']);
    expect(two.exitCode).toBe(1);
    expect(two.stderr.trim()).toBe('ciel: give one target, not --xen and --libvirt');
    const dash = await mon(['--libvirt=--help', '--count', '1']);
    expect(dash.exitCode).toBe(1);
    expect(dash.stderr.trim()).toBe('ciel: --libvirt: "--help" is not a libvirt domain name');
  });

  it('ciel monitor --libvirt --consistent SIGKILLed at random instants: the pause guardian resumes the domain every time', async () => {
    const KILLS = Number(process.env.CIEL_PAUSE_KILLS ?? 12);
    let insidePause = 0;
    for (let i = 0; i < KILLS; i++) {
      const proc = execa(process.execPath, [CIEL, 'monitor', '--libvirt', DOMAIN, '--kernel', RELEASE, '--consistent', '--json', '--interval', '10ms'], { cwd: ROOT, reject: false });
      let out = '';
      proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      const t0 = Date.now();
      while (!out.includes('"pause_us"') && Date.now() - t0 < 60_000) await new Promise((r) => setTimeout(r, 5));
      expect(out).toContain('"pause_us"');
      await new Promise((r) => setTimeout(r, Math.random() * 40));
      proc.kill('SIGKILL');
      const r = await proc; // the guardian shares stderr: this resolves once it has finished too
      if (/ciel pause guardian: resumed libvirt domain/.test(r.stderr)) insidePause++;
      expect(r.stderr).not.toMatch(/could NOT resume/);
      expect((await execa('virsh', ['domstate', DOMAIN])).stdout.trim()).toBe('running');
    }
    console.log(`${KILLS} kills, ${insidePause} inside a pause and resumed by the guardian through virsh`);
    expect(insidePause).toBeGreaterThan(0);
  }, 600_000);

  it('a guest reset is seen (virsh qemu-monitor-event) and re-attached; the domain destroyed ends the monitor with exit 1', async () => {
    const proc = execa(process.execPath, [CIEL, 'monitor', ...target, '--json', '--interval', '500ms'], { cwd: ROOT, reject: false });
    let out = '';
    let err = '';
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
    const until = async (pred: () => boolean, ms: number, what: string) => {
      const t0 = Date.now();
      while (!pred()) {
        if (Date.now() - t0 > ms) throw new Error(`no ${what} within ${ms} ms; stderr:\n${err}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    const count = () => samplesOf(out).filter((s) => s.containers.length === IDS.length).length;
    await until(() => count() >= 2, 30_000, 'first samples');
    await execa('virsh', ['qemu-monitor-command', DOMAIN, '{"execute":"system_reset"}']);
    await until(() => /guest reset \(.*host-qmp-system-reset/.test(err), 10_000, 'reset seen');
    const before = count();
    const t0 = Date.now();
    // the guest boots again (same QEMU, new KASLR slide); the monitor finds all containers again
    await until(() => count() >= before + 2, 180_000, 'samples after the reboot');
    console.log(`reset: all containers seen again ${Date.now() - t0} ms after the reset was reported`);
    const last = samplesOf(out).at(-1)!;
    expectGuestContainers(last);
    await execa('virsh', ['destroy', DOMAIN]);
    const done = await proc;
    expect(done.exitCode).toBe(1);
    expect(err).toMatch(/ciel: QEMU is gone: QEMU \(pid \d+\) exited/);
    // the event stream's virsh ended with the monitor
    const left = await execa('pgrep', ['-f', `qemu-monitor-event --domain ${DOMAIN}`], { reject: false });
    expect(left.stdout.trim()).toBe('');
  }, 300_000);
});
