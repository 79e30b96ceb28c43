// `ciel monitor` and `ciel autoscale` find the guest's kernel by themselves, and refuse a build for
// another kernel: subprocesses against one booted test guest (Debian 6.1.0-56-amd64, cgroup v2, KASLR
// on). The builds live in a folder of this test (CIEL_GENERATED), empty at start, so the first run
// really builds on first use (kernel packages from the shared cache: ~20 s warm, minutes cold). The
// "other kernel" is a real build of Debian's 6.1.0-56-cloud-amd64 (same ABI number and package version,
// another flavour: other System.map addresses), not a renamed copy.
import { execa } from 'execa';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildMonitor } from '../../compiler/build.ts';
import { QemuLiveBackend } from '../../vmi/backends/qemu-live.ts';
import type { Sample } from '../../vmi/sample.ts';
import { bootGuest, type Guest } from '../../testbed/guest/boot.ts';
import { GUEST_CONTAINERS } from '../../testbed/guest/containers.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CIEL = join(ROOT, 'bin', 'ciel.mjs');
const OTHER = '6.1.0-56-cloud-amd64';
const IDS = GUEST_CONTAINERS.map((c) => c.id).sort();

let guest: Guest;
let tmp: string;
let generated: string;
/** what the guest itself says: `uname -r` and the Debian version in /proc/version */
let release: string;
let debianVersion: string;

const ciel = (args: string[], timeout = 600_000) =>
  execa(process.execPath, [CIEL, ...args], { cwd: ROOT, reject: false, timeout, env: { CIEL_GENERATED: generated } });
const live = () => ['--qemu', guest.qmpSocket, '--memory', guest.memFile];
const mismatch = (vm: string) =>
  `${vm}the monitor build is for kernel ${OTHER}, but the guest runs ${release} (%SOURCE%): a monitor reads only the kernel it was built for. ` +
  `Give the guest's release (--kernel ${release}, or "kernel" in the config), or leave it out to have the guest's kernel found and built`;

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'ciel-kernel-test-'));
  generated = join(tmp, 'generated');
  guest = await bootGuest({ name: `kdetect-${process.pid}` });
  release = (await guest.sh('uname -r')).output.trim();
  const version = (await guest.sh('cat /proc/version')).output.trim();
  debianVersion = /#\d+ .*\bDebian (\S+) \(\d{4}-\d{2}-\d{2}\)$/.exec(version)![1];
}, 300_000);

afterAll(async () => {
  await guest?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('the guest kernel, found from outside', () => {
  it('the guest is the one this test expects', () => {
    expect(release).toBe('6.1.0-56-amd64');
    expect(debianVersion).toMatch(/^6\.1\.\d+-\d+$/);
  });

  it('no --kernel, no build yet: reads the release from the guest, builds on first use with progress, samples', { timeout: 900_000 }, async () => {
    const r = await ciel(['monitor', ...live(), '--json', '--count', '2', '--interval', '300ms']);
    expect(r.exitCode, r.stderr).toBe(0);
    const err = r.stderr.split('\n');
    expect(err).toContain(`ciel monitor: no monitor build for kernel ${release} yet: building it once (Debian's packages, cached; output ${join(generated, release)})`);
    expect(err.some((l) => l.startsWith(`ciel monitor: build ${release}: layout: `))).toBe(true);
    expect(err).toContain(`ciel monitor: kernel ${release} (read from the guest: VMCOREINFO in its memory, Debian ${debianVersion})`);
    const samples = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Sample);
    expect(samples).toHaveLength(2);
    for (const s of samples) {
      expect(s.kernel).toBe(release);
      expect(s.containers.map((c) => c.id).sort()).toEqual(IDS);
    }
    const manifest = JSON.parse(readFileSync(join(generated, release, 'manifest.json'), 'utf8')) as { release: string };
    expect(manifest.release).toBe(release);
  });

  it('the second run takes the build from the cache (nothing built, the compiler not needed)', { timeout: 120_000 }, async () => {
    const r = await ciel(['monitor', ...live(), '--json', '--count', '1']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/building|build 6\./);
    expect(r.stderr.trim()).toBe(`ciel monitor: kernel ${release} (read from the guest: VMCOREINFO in its memory, Debian ${debianVersion})`);
    expect((JSON.parse(r.stdout) as Sample).kernel).toBe(release);
  });

  it('--kernel naming a build of another kernel: the mismatch, plainly, exit 1 (a single VM that cannot be opened)', { timeout: 300_000 }, async () => {
    await buildMonitor({ release: OTHER, outRoot: generated, log: (l) => process.stderr.write(`[build ${OTHER}] ${l}\n`) });
    const r = await ciel(['monitor', ...live(), '--kernel', OTHER, '--json', '--count', '1']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr.trim()).toBe(`ciel: ${mismatch('').replace('%SOURCE%', 'VMCOREINFO in its memory')}`);
    expect(r.stderr).not.toMatch(/guest fault/);
    expect(r.stdout).toBe('');
    // the guest's own release given: accepted and said so
    const ok = await ciel(['monitor', ...live(), '--kernel', release, '--json', '--count', '1']);
    expect(ok.exitCode, ok.stderr).toBe(0);
    expect(ok.stderr.trim()).toBe(`ciel monitor: kernel ${release} (given; the guest runs it, Debian ${debianVersion})`);
  });

  it('ciel autoscale: a VM without "kernel" is read with the guest\'s; "kernel" of another build is exit 2 naming the VM', { timeout: 120_000 }, async () => {
    const cfg = (kernel?: string) => {
      const f = join(tmp, `autoscale-${kernel ?? 'auto'}.json`);
      const vm = { name: 'origin', qmp: guest.qmpSocket, memory: guest.memFile, pid: guest.pid, vcpus: 2, memMiB: 512, ...(kernel ? { kernel } : {}) };
      writeFileSync(f, JSON.stringify({ vms: [vm], policy: { policies: [{ resource: 'cpu', vmThreshold: 0.9, target: 0.6 }] } }));
      return f;
    };
    const auto = await ciel(['autoscale', '--config', cfg(), '--dry-run', '--count', '2', '--interval', '200ms'], 90_000);
    expect(auto.exitCode, auto.stderr).toBe(0);
    expect(auto.stderr).toContain(`ciel autoscale: origin: kernel ${release} (read from the guest: VMCOREINFO in its memory, Debian ${debianVersion})\n`);
    expect(auto.stderr).toMatch(new RegExp(`ciel autoscale: origin: attached \\(kernel ${release.replace(/\./g, '\\.')}; VM level: /proc/${guest.pid}`));
    const other = await ciel(['autoscale', '--config', cfg(OTHER), '--dry-run', '--count', '2'], 90_000);
    expect(other.exitCode).toBe(2);
    expect(other.stderr.trim()).toBe(`ciel autoscale: origin: cannot start: cannot attach the monitor: ${mismatch('').replace('%SOURCE%', 'VMCOREINFO in its memory')}`);
  });

  it('an ELF dump: the release from its own VMCOREINFO note; --kernel of another build refused the same way', { timeout: 300_000 }, async () => {
    const core = join(tmp, 'guest.core');
    const b = await QemuLiveBackend.open({ memFile: guest.memFile, qmpSocket: guest.qmpSocket, vm: 'g' });
    try {
      await b.qmp.execute('dump-guest-memory', { paging: false, protocol: `file:${core}`, format: 'elf' }, 120_000);
    } finally {
      await b.close();
    }
    const r = await ciel(['monitor', '--vmcore', core, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr.trim()).toBe(`ciel monitor: kernel ${release} (read from the guest: the dump's VMCOREINFO note, Debian ${debianVersion})`);
    const s = JSON.parse(r.stdout) as Sample;
    expect(s.kernel).toBe(release);
    expect(s.containers.map((c) => c.id).sort()).toEqual(IDS);
    const other = await ciel(['monitor', '--vmcore', core, '--kernel', OTHER]);
    expect(other.exitCode).toBe(1);
    expect(other.stderr.trim()).toBe(`ciel: ${mismatch('').replace('%SOURCE%', "the dump's VMCOREINFO note")}`);
  });
});
