// The config of `ciel autoscale` (controller/config.ts): exact error messages (file and field
// path), defaults, relative paths resolved against the file's directory.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadAutoscaleConfig, parseAutoscaleConfig, validateAutoscaleConfig } from '../../controller/config.ts';
import { autoscaleTarget } from '../../controller/monitor-sampler.ts';
import { BadInputError } from '../../common/errors.ts';

const FILE = '/etc/ciel/autoscale.json';
const dir = mkdtempSync(join(tmpdir(), 'ciel-autoscale-cfg-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A valid config; `edit` changes a copy. */
function cfg(edit: (c: any) => void = () => {}): unknown {
  const c = {
    vms: [{ name: 'web-vm', kernel: '6.1.0-56-amd64', qmp: '/run/web.qmp', memory: '/dev/shm/web', pid: 1234, vcpus: 2, memMiB: 512 }],
    policy: { policies: [{ resource: 'cpu', vmThreshold: 0.35, containerThreshold: 0.45, target: 0.4, vmTarget: 0.3 }] },
  };
  edit(c);
  return c;
}

function err(raw: unknown): string {
  try {
    validateAutoscaleConfig(raw, FILE);
  } catch (e) {
    expect(e).toBeInstanceOf(BadInputError);
    expect((e as BadInputError).file).toBe(FILE);
    return (e as Error).message;
  }
  throw new Error('no error');
}

const PROV = { kind: 'qemu-direct', template: 'tmpl.qcow2', kernel: 'vmlinuz', initrd: 'initrd', cmdline: 'console=ttyS0 ciel.container={container}', vcpus: 1, memMiB: 256 };

describe('ciel autoscale config: valid', () => {
  it('fills defaults and keeps the policy as given', () => {
    const c = validateAutoscaleConfig(cfg(), FILE);
    expect(c.interval).toBe(1);
    expect(c.containerBaseline).toBe('kept');
    expect(c.vms[0]).toEqual({ name: 'web-vm', kernel: '6.1.0-56-amd64', qmp: '/run/web.qmp', memory: '/dev/shm/web', stats: { kind: 'proc', pid: 1234, vcpus: 2, memMiB: 512 }, names: {} });
    expect(c.policy).toEqual({ policies: [{ resource: 'cpu', vmThreshold: 0.35, containerThreshold: 0.45, target: 0.4, vmTarget: 0.3 }] });
    expect(c.provisioner).toBeUndefined();
    expect(c.balancer).toBeUndefined();
  });

  it('resolves relative paths against the directory of the file', () => {
    const c = validateAutoscaleConfig(
      cfg((x) => {
        x.vms[0].qmp = 'run/web.qmp';
        x.vms[0].memory = '../shm/web';
        x.vms[0].disk = 'disks/web.qcow2';
        x.provisioner = { ...PROV, dir: 'replicas' };
        x.balancer = { hook: './lb-hook' };
      }),
      FILE,
    );
    expect(c.vms[0]).toMatchObject({ qmp: '/etc/ciel/run/web.qmp', memory: '/etc/shm/web', disk: '/etc/ciel/disks/web.qcow2' });
    expect(c.provisioner).toMatchObject({ template: '/etc/ciel/tmpl.qcow2', kernel: '/etc/ciel/vmlinuz', initrd: '/etc/ciel/initrd', dir: '/etc/ciel/replicas', disk: 'overlay' });
    expect(c.balancer).toEqual({ hook: '/etc/ciel/lb-hook' });
  });

  it('a libvirt VM: domain and default URI; a libvirt provisioner keeps its template as a domain name', () => {
    const c = validateAutoscaleConfig(
      cfg((x) => {
        x.vms[0] = { name: 'db-vm', kernel: '6.1.0-56-amd64', qmp: '/q', memory: '/m', libvirt: 'db', names: { abc: 'db' } };
        x.provisioner = { ...PROV, kind: 'libvirt', template: 'ciel-template', uri: 'qemu:///session', ready: null };
      }),
      FILE,
    );
    expect(c.vms[0]!.stats).toEqual({ kind: 'libvirt', domain: 'db', uri: 'qemu:///system' });
    expect(c.vms[0]!.names).toEqual({ abc: 'db' });
    expect(c.provisioner).toMatchObject({ kind: 'libvirt', template: 'ciel-template', uri: 'qemu:///session', ready: null });
  });

  it('reads a file (and names it in errors)', () => {
    const f = join(dir, 'a.json');
    writeFileSync(f, JSON.stringify(cfg((x) => (x.vms[0].memory = 'ram'))));
    expect(loadAutoscaleConfig(f).vms[0]!.memory).toBe(join(dir, 'ram'));
    expect(() => loadAutoscaleConfig(join(dir, 'missing.json'))).toThrow(`${join(dir, 'missing.json')}: cannot read the config: ENOENT`);
    expect(() => parseAutoscaleConfig('{"vms": [}', f)).toThrow(`${f}: not valid JSON`);
  });
});

describe('ciel autoscale config: errors name the file and the field', () => {
  it('unknown fields, at every level', () => {
    expect(err(cfg((x) => (x.intervall = 2)))).toBe(`${FILE}: intervall: unknown field (known: interval, containerBaseline, vms, policy, provisioner, balancer)`);
    expect(err(cfg((x) => (x.vms[0].cpus = 2)))).toBe(
      `${FILE}: vms[0].cpus: unknown field (known: name, kernel, qmp, memory, pid, libvirt, uri, vcpus, memMiB, names, disk)`,
    );
    expect(err(cfg((x) => (x.policy.policies[0].threshold = 0.5)))).toBe(
      `${FILE}: policy.policies[0].threshold: unknown field (known: resource, vmThreshold, containerThreshold, containerThresholds, target, vmTarget)`,
    );
    expect(err(cfg((x) => (x.policy.capacities = { diskBytes: 1 })))).toBe(`${FILE}: policy.capacities.diskBytes: unknown field (known: diskBytesPerSec, netBytesPerSec)`);
    expect(err(cfg((x) => (x.balancer = { hook: '/x', timeout: 3 })))).toBe(`${FILE}: balancer.timeout: unknown field (known: hook)`);
  });

  it('exactly one of pid and libvirt', () => {
    expect(err(cfg((x) => (x.vms[0].libvirt = 'web')))).toBe(
      `${FILE}: vms[0].libvirt: not with "pid" (give exactly one: "pid" of a QEMU process started directly, or "libvirt" with the domain name)`,
    );
    expect(err(cfg((x) => delete x.vms[0].pid))).toBe(`${FILE}: vms[0].pid: missing (give "pid" of a QEMU process started directly, or "libvirt" with the domain name)`);
    expect(err(cfg((x) => delete x.vms[0].vcpus))).toBe(`${FILE}: vms[0].vcpus: missing (needed with "pid": VM-level CPU utilisation is CPU time / vCPUs)`);
    expect(err(cfg((x) => (x.vms[0].uri = 'qemu:///system')))).toBe(`${FILE}: vms[0].uri: only with "libvirt" (the libvirt connection of the domain)`);
    expect(err(cfg((x) => (x.vms[0] = { name: 'a', kernel: '6.1.0-56-amd64', qmp: '/q', memory: '/m', libvirt: 'a', vcpus: 2 })))).toBe(
      `${FILE}: vms[0].vcpus: only with "pid" (libvirt reports it in domstats)`,
    );
    expect(err(cfg((x) => (x.vms[0].pid = 0)))).toBe(`${FILE}: vms[0].pid: must be an integer 1..4194304 (got number 0)`);
  });

  it('qmp and memory: needed with "pid"; with "libvirt" both or neither (then read through libvirt)', () => {
    expect(err(cfg((x) => delete x.vms[0].qmp))).toBe(
      `${FILE}: vms[0].qmp: missing (a QEMU started directly is read at the container level through its QMP socket and RAM file)`,
    );
    expect(err(cfg((x) => (x.vms[0] = { name: 'a', kernel: '6.1.0-56-amd64', memory: '/m', libvirt: 'a' })))).toBe(
      `${FILE}: vms[0].qmp: missing (give "qmp" and "memory" together, or neither: the domain is then read through libvirt)`,
    );
    const c = validateAutoscaleConfig(cfg((x) => (x.vms[0] = { name: 'a', libvirt: 'dom-a', uri: 'qemu:///session' })), FILE);
    expect(c.vms[0]).toEqual({ name: 'a', names: {}, stats: { kind: 'libvirt', domain: 'dom-a', uri: 'qemu:///session' } });
    expect(autoscaleTarget(c.vms[0]!)).toEqual({ name: 'a', backend: 'libvirt', domain: 'dom-a', uri: 'qemu:///session' });
    // a libvirt VM with its own QMP socket for Ciel keeps using it
    const d = validateAutoscaleConfig(cfg((x) => (x.vms[0] = { name: 'b', kernel: '6.1.0-56-amd64', qmp: '/q', memory: '/m', libvirt: 'b' })), FILE);
    expect(autoscaleTarget(d.vms[0]!)).toEqual({ name: 'b', backend: 'qemu', kernel: '6.1.0-56-amd64', qmp: '/q', memory: '/m' });
  });

  it('VM names, kernels, duplicate names and service names shared by two VMs', () => {
    expect(err(cfg((x) => (x.vms[0].kernel = 'latest')))).toBe(`${FILE}: vms[0].kernel: must be a kernel release like 6.1.0-56-amd64 (got "latest")`);
    expect(err(cfg((x) => x.vms.push({ ...x.vms[0] })))).toBe(`${FILE}: vms[1].name: duplicate VM name "web-vm" (also vms[0])`);
    expect(
      err(
        cfg((x) => {
          x.vms[0].names = { aaa: 'web' };
          x.vms.push({ ...x.vms[0], name: 'web-vm2', names: { bbb: 'web' } });
        }),
      ),
    ).toBe(`${FILE}: vms[1].names.bbb: service name "web" is also used in VM web-vm (containers are keyed by name: names must be unique across VMs)`);
    expect(err(cfg((x) => (x.vms[0].names = { aaa: 3 })))).toBe(`${FILE}: vms[0].names.aaa: must be a non-empty string (got number 3)`);
    expect(err(cfg((x) => (x.vms = [])))).toBe(`${FILE}: vms: must list at least one VM`);
  });

  it('policy: resources, fractions, targets', () => {
    expect(err(cfg((x) => (x.policy.policies[0].resource = 'gpu')))).toBe(`${FILE}: policy.policies[0].resource: must be one of cpu, memory, disk, network (got "gpu")`);
    expect(err(cfg((x) => (x.policy.policies[0].target = 0)))).toBe(`${FILE}: policy.policies[0].target: must be a fraction > 0 and <= 1 (0.7 = 70 %) (got number 0)`);
    expect(err(cfg((x) => (x.policy.policies[0].target = -0.5)))).toBe(`${FILE}: policy.policies[0].target: must be a fraction > 0 and <= 1 (0.7 = 70 %) (got number -0.5)`);
    expect(err(cfg((x) => (x.policy.policies[0].vmThreshold = 70)))).toBe(`${FILE}: policy.policies[0].vmThreshold: must be a fraction > 0 and <= 1 (0.7 = 70 %) (got number 70)`);
    expect(err(cfg((x) => delete x.policy.policies[0].target))).toBe(`${FILE}: policy.policies[0].target: missing`);
    expect(err(cfg((x) => (x.policy.policies[0].containerThresholds = { web: '0.5' })))).toBe(
      `${FILE}: policy.policies[0].containerThresholds.web: must be a fraction > 0 and <= 1 (0.7 = 70 %) (got "0.5")`,
    );
    expect(err(cfg((x) => x.policy.policies.push({ resource: 'cpu', vmThreshold: 0.5, target: 0.5 })))).toBe(
      `${FILE}: policy.policies[1].resource: duplicate resource "cpu" (also policy.policies[0])`,
    );
    expect(err(cfg((x) => (x.policy.policies = [])))).toBe(`${FILE}: policy.policies: must list at least one resource policy`);
    expect(err(cfg((x) => delete x.policy))).toBe(`${FILE}: policy: missing (at least {"policies": [{"resource": "cpu", "vmThreshold": 0.7, "target": 0.6}]})`);
  });

  it('policy: the engine-wide knobs', () => {
    expect(err(cfg((x) => (x.policy.minReplicas = 12)))).toBe(`${FILE}: policy.minReplicas: minReplicas (12) is above maxReplicas (10, the default)`);
    expect(err(cfg((x) => Object.assign(x.policy, { minReplicas: 3, maxReplicas: 2 })))).toBe(`${FILE}: policy.maxReplicas: minReplicas (3) is above maxReplicas (2)`);
    expect(err(cfg((x) => (x.policy.maxReplicas = 1.5)))).toBe(`${FILE}: policy.maxReplicas: must be an integer 1..1000 (got number 1.5)`);
    expect(err(cfg((x) => (x.policy.trendPoints = 1)))).toBe(`${FILE}: policy.trendPoints: must be an integer 2..1000 (a slope needs two points) (got number 1)`);
    expect(err(cfg((x) => (x.policy.tolerance = 1)))).toBe(`${FILE}: policy.tolerance: must be a number >= 0 and < 1 (got number 1)`);
    expect(err(cfg((x) => (x.policy.scaleUpCooldownMs = '30s')))).toBe(`${FILE}: policy.scaleUpCooldownMs: must be a number of milliseconds 0..86400000 (got "30s")`);
    expect(err(cfg((x) => (x.policy.capacities = { netBytesPerSec: 0 })))).toBe(`${FILE}: policy.capacities.netBytesPerSec: must be a number of bytes per second > 0 (got number 0)`);
  });

  it('several wrong fields: the unknown one first, each other on a line of its own', () => {
    expect(
      err(
        cfg((x) => {
          x.vms[0].kernel = 'latest';
          x.policy.policies[0].target = 2;
          x.policy.bogus = 1;
        }),
      ),
    ).toBe(
      `${FILE}: policy.bogus: unknown field (known: policies, capacities, tolerance, scaleUpCooldownMs, scaleDownWindowMs, minReplicas, maxReplicas, trendPoints, trendHorizonS, trendMinShare, maxRateGapMs)\n` +
        `  also vms[0].kernel: must be a kernel release like 6.1.0-56-amd64 (got "latest")\n` +
        `  also policy.policies[0].target: must be a fraction > 0 and <= 1 (0.7 = 70 %) (got number 2)`,
    );
  });

  it('top level: interval and containerBaseline', () => {
    expect(err(cfg((x) => (x.interval = 0)))).toBe(`${FILE}: interval: must be a number of seconds between 0.01 and 86400 (got number 0)`);
    expect(err(cfg((x) => (x.containerBaseline = 'lazy')))).toBe(`${FILE}: containerBaseline: must be one of kept, on-demand (got "lazy")`);
    expect(err([])).toBe(`${FILE}: (top level): must be an object with "vms" and "policy" (got an array)`);
  });

  it('provisioner: {container} in the cmdline, kinds, sizes', () => {
    expect(err(cfg((x) => (x.provisioner = { ...PROV, cmdline: 'console=ttyS0' })))).toBe(
      `${FILE}: provisioner.cmdline: must contain {container} (each replica is told which one container to run) (got "console=ttyS0")`,
    );
    expect(err(cfg((x) => (x.provisioner = { ...PROV, kind: 'firecracker' })))).toBe(`${FILE}: provisioner.kind: must be one of qemu-direct, libvirt (got "firecracker")`);
    expect(err(cfg((x) => (x.provisioner = { ...PROV, uri: 'qemu:///system' })))).toBe(`${FILE}: provisioner.uri: only with kind "libvirt"`);
    expect(err(cfg((x) => (x.provisioner = { ...PROV, memMiB: 8 })))).toBe(`${FILE}: provisioner.memMiB: must be an integer 16..16777216 (got number 8)`);
    expect(err(cfg((x) => (x.provisioner = { ...PROV, disk: 'copy' })))).toBe(`${FILE}: provisioner.disk: must be one of overlay, sparse-copy (got "copy")`);
    expect(err(cfg((x) => (x.provisioner = { ...PROV, kind: 'libvirt', template: '/var/tmpl.qcow2' })))).toBe(
      `${FILE}: provisioner.template: must be the name of the template domain (got "/var/tmpl.qcow2")`,
    );
    const { initrd: _, ...noInitrd } = PROV;
    expect(err(cfg((x) => (x.provisioner = noInitrd)))).toBe(`${FILE}: provisioner.initrd: missing`);
  });

  it('provisioner.addresses: IPv4 entries, no duplicates, and {ip} in the cmdline exactly when given', () => {
    const withIp = { ...PROV, cmdline: `${PROV.cmdline} ciel.ip={ip}` };
    expect(validateAutoscaleConfig(cfg((x) => (x.provisioner = { ...withIp, addresses: ['10.0.0.20/24', '10.0.0.21'] })), FILE).provisioner!.addresses).toEqual(['10.0.0.20/24', '10.0.0.21']);
    expect(err(cfg((x) => (x.provisioner = { ...withIp, addresses: [] })))).toBe(`${FILE}: provisioner.addresses: must be a non-empty array of IPv4 addresses like "10.0.0.20/24" (got an array)`);
    expect(err(cfg((x) => (x.provisioner = { ...withIp, addresses: ['10.0.0.20/24', '10.0.0.256/24'] })))).toBe(
      `${FILE}: provisioner.addresses[1]: must be an IPv4 address, optionally with /prefix, like "10.0.0.20/24" (got "10.0.0.256/24")`,
    );
    expect(err(cfg((x) => (x.provisioner = { ...withIp, addresses: ['10.0.0.20/33'] })))).toBe(
      `${FILE}: provisioner.addresses[0]: must be an IPv4 address, optionally with /prefix, like "10.0.0.20/24" (got "10.0.0.20/33")`,
    );
    expect(err(cfg((x) => (x.provisioner = { ...withIp, addresses: ['10.0.0.20/24', '10.0.0.20/16'] })))).toBe(`${FILE}: provisioner.addresses[1]: duplicate address 10.0.0.20`);
    expect(err(cfg((x) => (x.provisioner = { ...PROV, addresses: ['10.0.0.20/24'] })))).toBe(
      `${FILE}: provisioner.cmdline: must contain {ip} when "addresses" is given (each replica is told its address there) (got "console=ttyS0 ciel.container={container}")`,
    );
    expect(err(cfg((x) => (x.provisioner = withIp)))).toBe(`${FILE}: provisioner.cmdline: contains {ip} but there are no "addresses" to fill it with`);
  });
});
