// controller/service.ts: what `ciel autoscale` does before its loop runs, without a guest. A missing
// monitor build or a file the config names is bad input (exit 1), a VM whose VM-level stats cannot
// be read is a StartError naming the VM (exit 2); the CLI maps them to those statuses.
// Needs a monitor build of 6.1.0-56-amd64: built first when missing.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildMonitor } from '../../compiler/build.ts';
import { GENERATED, hasBuild } from '../../common/build-artifact.ts';
import { BadFieldError, BadInputError } from '../../common/errors.ts';
import { validateAutoscaleConfig } from '../../controller/config.ts';
import { AutoscaleService, StartError } from '../../controller/service.ts';

const RELEASE = '6.1.0-56-amd64';
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const dir = mkdtempSync(join(tmpdir(), 'ciel-service-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** a pid no process has (pid_max is at most 4194304) */
const DEAD_PID = 4194303;
const raw = (edit: (c: any) => void = () => {}) => {
  const c = {
    vms: [{ name: 'origin', kernel: RELEASE, qmp: join(dir, 'qmp'), memory: join(dir, 'ram'), pid: DEAD_PID, vcpus: 1, memMiB: 256 }],
    policy: { policies: [{ resource: 'cpu', vmThreshold: 0.5, target: 0.5 }] },
  };
  edit(c);
  return c;
};
const start = (c: unknown, dryRun = true) =>
  AutoscaleService.start({ config: validateAutoscaleConfig(c, join(dir, 'a.json')), configFile: join(dir, 'a.json'), intervalMs: 1000, dryRun, destroyOnExit: false, emit: () => {}, say: () => {} });

beforeAll(async () => {
  if (!hasBuild(RELEASE)) await buildMonitor({ release: RELEASE });
}, 600_000);

describe('AutoscaleService.start', () => {
  it('a libvirt template domain that does not answer: StartError at start, not at the first scale-out', async () => {
    for (const f of ['vmlinuz', 'initrd']) writeFileSync(join(dir, f), '');
    const c = raw((x) => (x.provisioner = { kind: 'libvirt', template: 'ciel-no-such-template', kernel: 'vmlinuz', initrd: 'initrd', cmdline: '{container}', vcpus: 1, memMiB: 64 }));
    const err = await start(c, false).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StartError);
    expect((err as StartError).vm).toBeUndefined();
    // libvirtd may be down (cannot connect) or up (no such domain): either way, said at start
    expect((err as Error).message).toMatch(/^cannot start: provisioner\.template: libvirt template domain ciel-no-such-template at qemu:\/\/\/system is not usable: \S/);
  });

  it('no monitor build for a VM kernel: bad input naming the missing file', async () => {
    const err = await start(raw((c) => (c.vms[0].kernel = '6.1.0-9999-amd64'))).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BadInputError);
    expect((err as BadInputError).file).toBe(join(GENERATED, '6.1.0-9999-amd64', 'monitor.so'));
    expect((err as Error).message).toBe(`${join(GENERATED, '6.1.0-9999-amd64', 'monitor.so')}: no monitor build for kernel 6.1.0-9999-amd64: run \`ciel build --kernel 6.1.0-9999-amd64\` first`);
  });

  it('a real provisioner whose kernel file is missing: the config field', async () => {
    const c = raw((x) => (x.provisioner = { kind: 'qemu-direct', template: 't.qcow2', kernel: 'no-vmlinuz', initrd: 'no-initrd', cmdline: '{container}', vcpus: 1, memMiB: 64 }));
    const err = await start(c, false).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BadFieldError);
    expect(err).toMatchObject({ file: join(dir, 'a.json'), field: 'provisioner.kernel' });
    expect((err as Error).message).toBe(`${join(dir, 'a.json')}: provisioner.kernel: ${join(dir, 'no-vmlinuz')} does not exist`);
  });

  it('a QEMU pid that is not running: StartError naming the VM', async () => {
    const err = await start(raw()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StartError);
    expect((err as StartError).vm).toBe('origin');
    expect((err as Error).message).toMatch(new RegExp(`^origin: cannot start: no VM-level stats from /proc/${DEAD_PID} \\(is QEMU running with that pid\\?\\): `));
  });

  it('the CLI: exit 2 when a VM cannot start, 1 on bad input', { timeout: 60_000 }, async () => {
    const f = join(dir, 'cli.json');
    writeFileSync(f, JSON.stringify(raw()));
    const env = { ...process.env, CIEL_GENERATED: GENERATED };
    const r = await execa('npx', ['tsx', 'cli/main.ts', 'autoscale', '--config', f, '--count', '1'], { cwd: ROOT, reject: false, env });
    expect(r.exitCode, r.stderr).toBe(2);
    expect(r.stderr).toContain(`ciel autoscale: origin: cannot start: no VM-level stats from /proc/${DEAD_PID}`);
    writeFileSync(f, JSON.stringify(raw((c) => (c.vms[0].pid = 'x'))));
    const b = await execa('npx', ['tsx', 'cli/main.ts', 'autoscale', '--config', f], { cwd: ROOT, reject: false, env });
    expect(b.exitCode).toBe(1);
    expect(b.stderr.trim()).toBe(`ciel: ${f}: vms[0].pid: must be an integer 1..4194304 (got "x")`);
  });
});
