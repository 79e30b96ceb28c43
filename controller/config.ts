// The configuration of `ciel autoscale`: which origin VMs to watch (container level through the VMI
// monitor, VM level from /proc of their QEMU or from libvirt), the scaling policy, and optionally how to
// start replicas and tell a load balancer about them.
//
// JSON, validated field by field as monitor/config.ts does for `ciel monitor`: every error is a
// BadInputError naming the file and the field path (`autoscale.json: policy.policies[0].target: must be
// a fraction > 0 and <= 1 (0.7 = 70 %) (got number 0)`), unknown fields are errors, relative paths are
// resolved against the directory of the config file.

import { dirname, isAbsolute, resolve } from 'node:path';
import { describe, parseJson, readConfigText } from '../monitor/config.ts';
import { BadInputError } from '../common/errors.ts';
import type { DiskStrategy } from '../provisioners/provisioner.ts';
import { RESOURCES, type PolicyConfig, type Resource, type ResourcePolicy } from './types.ts';

export const DEFAULT_AUTOSCALE_INTERVAL = 1;
export const DEFAULT_LIBVIRT_URI = 'qemu:///system';
export const PROVISIONER_KINDS = ['qemu-direct', 'libvirt'] as const;
export const BASELINES = ['kept', 'on-demand'] as const;
const DISKS: readonly DiskStrategy[] = ['overlay', 'sparse-copy'];

/** Where the VM-level (cheap, every interval) statistics of an origin VM come from. */
export type VmLevelSource =
  /** /proc/<pid> of a QEMU process started directly (ProcVmStats); capacity from vcpus/memMiB */
  | { kind: 'proc'; pid: number; vcpus: number; memMiB: number }
  /** `virsh -c URI domstats DOMAIN` */
  | { kind: 'libvirt'; domain: string; uri: string };

export interface AutoscaleVm {
  name: string;
  /** guest kernel release of the monitor build (generated/<release>/) */
  kernel: string;
  /** QMP socket (registers, pause/resume) and guest RAM file: the container level, for every VM */
  qmp: string;
  memory: string;
  stats: VmLevelSource;
  /** Docker id → service name (wins over names read from the disk) */
  names: Record<string, string>;
  /** disk image to read container names from (/var/lib/docker, as `ciel monitor --disk`) */
  disk?: string;
}

export interface ReplicaProvisionerConfig {
  kind: (typeof PROVISIONER_KINDS)[number];
  /** qemu-direct: the qcow2 template disk (a path); libvirt: the template domain's name */
  template: string;
  /** libvirt connection URI */
  uri?: string;
  kernel: string;
  initrd: string;
  /** kernel command line of a replica; `{container}` (required) and `{name}` are filled in */
  cmdline: string;
  vcpus: number;
  memMiB: number;
  disk: DiskStrategy;
  /** where clones' disks, logs and sockets go (default: the provisioner's cache directory) */
  dir?: string;
  /** serial-console line that marks a replica ready (`{container}` filled in); null: do not wait */
  ready?: string | null;
  /**
   * Addresses for replicas (IPv4, optionally /prefix), filled in for `{ip}` in the cmdline and told to
   * the balancer hook; each replica holds one while it exists (a paused pooled replica keeps its own)
   */
  addresses?: string[];
}

export interface AutoscaleConfig {
  /** seconds between VM-level checks */
  interval: number;
  containerBaseline: (typeof BASELINES)[number];
  vms: AutoscaleVm[];
  policy: PolicyConfig;
  provisioner?: ReplicaProvisionerConfig;
  balancer?: { hook: string };
}

type Obj = Record<string, unknown>;

/** Field readers for one JSON object at `at` (a field path); every failure throws through `bad`. */
function fields(raw: unknown, at: string, known: readonly string[], bad: (f: string, d: string) => never, baseDir: string) {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) bad(at, `must be an object (got ${describe(raw)})`);
  const o = raw as Obj;
  const p = (k: string) => (at ? `${at}.${k}` : k);
  for (const k of Object.keys(o)) if (!known.includes(k)) bad(p(k), `unknown field (known: ${known.join(', ')})`);
  const r = {
    o,
    p,
    has: (k: string) => o[k] !== undefined,
    str(k: string, required = false): string | undefined {
      const x = o[k];
      if (x === undefined) return required ? bad(p(k), 'missing') : undefined;
      if (typeof x !== 'string' || x.trim() === '') bad(p(k), `must be a non-empty string (got ${describe(x)})`);
      return x as string;
    },
    path(k: string, required = false): string | undefined {
      const x = r.str(k, required);
      return x === undefined ? undefined : isAbsolute(x) ? x : resolve(baseDir, x);
    },
    oneOf<T extends string>(k: string, allowed: readonly T[], dflt?: T): T | undefined {
      const x = r.str(k, dflt === undefined);
      if (x === undefined) return dflt;
      if (!(allowed as readonly string[]).includes(x)) bad(p(k), `must be one of ${allowed.join(', ')} (got ${describe(x)})`);
      return x as T;
    },
    /** a finite number; `ok` says whether it is acceptable, `want` how the message words the range */
    num(k: string, want: string, ok: (n: number) => boolean, required = false): number | undefined {
      const x = o[k];
      if (x === undefined) return required ? bad(p(k), 'missing') : undefined;
      if (typeof x !== 'number' || !Number.isFinite(x) || !ok(x)) bad(p(k), `must be ${want} (got ${describe(x)})`);
      return x as number;
    },
    int(k: string, min: number, max: number, required = false): number | undefined {
      return r.num(k, `an integer ${min}..${max}`, (n) => Number.isInteger(n) && n >= min && n <= max, required);
    },
  };
  return r;
}

const TOP = ['interval', 'containerBaseline', 'vms', 'policy', 'provisioner', 'balancer'] as const;
const VM = ['name', 'kernel', 'qmp', 'memory', 'pid', 'libvirt', 'uri', 'vcpus', 'memMiB', 'names', 'disk'] as const;
const POLICY = ['policies', 'capacities', 'tolerance', 'scaleUpCooldownMs', 'scaleDownWindowMs', 'minReplicas', 'maxReplicas', 'trendPoints', 'trendHorizonS', 'trendMinShare', 'maxRateGapMs'] as const;
const RESOURCE_POLICY = ['resource', 'vmThreshold', 'containerThreshold', 'containerThresholds', 'target', 'vmTarget'] as const;
const CAPACITIES = ['diskBytesPerSec', 'netBytesPerSec'] as const;
const PROVISIONER = ['kind', 'template', 'uri', 'kernel', 'initrd', 'cmdline', 'vcpus', 'memMiB', 'disk', 'dir', 'ready', 'addresses'] as const;
const BALANCER = ['hook'] as const;

const FRACTION = 'a fraction > 0 and <= 1 (0.7 = 70 %)';
const isFraction = (n: number) => n > 0 && n <= 1;
const DAY_MS = 86_400_000;

/** Validate an already parsed config object; `file` names it in errors, `baseDir` resolves relative paths. */
export function validateAutoscaleConfig(raw: unknown, file: string, baseDir = dirname(resolve(file))): AutoscaleConfig {
  const bad = (field: string, detail: string): never => {
    throw new BadInputError(file, `${field}: ${detail}`);
  };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) bad('(top level)', `must be an object with "vms" and "policy" (got ${describe(raw)})`);
  const top = fields(raw, '', TOP, bad, baseDir);
  const interval = top.num('interval', 'a number of seconds between 0.01 and 86400', (n) => n >= 0.01 && n <= 86400) ?? DEFAULT_AUTOSCALE_INTERVAL;
  const containerBaseline = top.oneOf('containerBaseline', BASELINES, 'kept')!;

  if (!top.has('vms')) bad('vms', 'missing');
  if (!Array.isArray(top.o.vms)) bad('vms', `must be an array (got ${describe(top.o.vms)})`);
  const list = top.o.vms as unknown[];
  if (list.length === 0) bad('vms', 'must list at least one VM');
  const seen = new Map<string, number>();
  const services = new Map<string, string>();
  const vms = list.map((v, i) => {
    const vm = validateVm(v, `vms[${i}]`, bad, baseDir);
    if (seen.has(vm.name)) bad(`vms[${i}].name`, `duplicate VM name ${JSON.stringify(vm.name)} (also vms[${seen.get(vm.name)}])`);
    seen.set(vm.name, i);
    for (const [id, svc] of Object.entries(vm.names)) {
      const other = services.get(svc);
      if (other !== undefined && other !== vm.name)
        bad(`vms[${i}].names.${id}`, `service name ${JSON.stringify(svc)} is also used in VM ${other} (containers are keyed by name: names must be unique across VMs)`);
      services.set(svc, vm.name);
    }
    return vm;
  });

  if (!top.has('policy')) bad('policy', 'missing (at least {"policies": [{"resource": "cpu", "vmThreshold": 0.7, "target": 0.6}]})');
  const policy = validatePolicy(top.o.policy, 'policy', bad, baseDir);
  const provisioner = top.has('provisioner') ? validateProvisioner(top.o.provisioner, 'provisioner', bad, baseDir) : undefined;
  let balancer: AutoscaleConfig['balancer'];
  if (top.has('balancer')) {
    const b = fields(top.o.balancer, 'balancer', BALANCER, bad, baseDir);
    balancer = { hook: b.path('hook', true)! };
  }
  return { interval, containerBaseline, vms, policy, ...(provisioner ? { provisioner } : {}), ...(balancer ? { balancer } : {}) };
}

function validateVm(raw: unknown, at: string, bad: (f: string, d: string) => never, baseDir: string): AutoscaleVm {
  const f = fields(raw, at, VM, bad, baseDir);
  const name = f.str('name', true)!;
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)) bad(f.p('name'), `must be letters, digits, '.', '_' or '-' (got ${describe(name)})`);
  const kernel = f.str('kernel', true)!;
  if (!/^\d+\.\d+[^\s/]*$/.test(kernel)) bad(f.p('kernel'), `must be a kernel release like 6.1.0-56-amd64 (got ${describe(kernel)})`);
  const level = 'the container level reads registers through QMP and RAM from the memory file, for libvirt VMs too';
  if (!f.has('qmp')) bad(f.p('qmp'), `missing (${level})`);
  if (!f.has('memory')) bad(f.p('memory'), `missing (${level})`);
  const qmp = f.path('qmp')!;
  const memory = f.path('memory')!;

  let stats: VmLevelSource;
  if (f.has('pid') && f.has('libvirt')) bad(f.p('libvirt'), 'not with "pid" (give exactly one: "pid" of a QEMU process started directly, or "libvirt" with the domain name)');
  if (f.has('pid')) {
    const pid = f.int('pid', 1, 4194304)!;
    if (f.has('uri')) bad(f.p('uri'), 'only with "libvirt" (the libvirt connection of the domain)');
    if (!f.has('vcpus')) bad(f.p('vcpus'), 'missing (needed with "pid": VM-level CPU utilisation is CPU time / vCPUs)');
    if (!f.has('memMiB')) bad(f.p('memMiB'), 'missing (needed with "pid": VM-level memory utilisation is RSS / memMiB)');
    stats = { kind: 'proc', pid, vcpus: f.int('vcpus', 1, 1024)!, memMiB: f.int('memMiB', 1, 16 * 1024 * 1024)! };
  } else if (f.has('libvirt')) {
    for (const k of ['vcpus', 'memMiB'] as const) if (f.has(k)) bad(f.p(k), 'only with "pid" (libvirt reports it in domstats)');
    stats = { kind: 'libvirt', domain: f.str('libvirt')!, uri: f.str('uri') ?? DEFAULT_LIBVIRT_URI };
  } else {
    return bad(f.p('pid'), 'missing (give "pid" of a QEMU process started directly, or "libvirt" with the domain name)');
  }

  const names: Record<string, string> = {};
  if (f.has('names')) {
    const n = f.o.names;
    if (typeof n !== 'object' || n === null || Array.isArray(n)) bad(f.p('names'), `must be an object {"<docker id>": "<service name>"} (got ${describe(n)})`);
    for (const [id, svc] of Object.entries(n as Obj)) {
      if (id.trim() === '') bad(f.p('names'), 'an empty container id');
      if (typeof svc !== 'string' || svc.trim() === '') bad(`${f.p('names')}.${id}`, `must be a non-empty string (got ${describe(svc)})`);
      names[id] = svc as string;
    }
  }
  const disk = f.path('disk');
  return { name, kernel, qmp, memory, stats, names, ...(disk ? { disk } : {}) };
}

function validatePolicy(raw: unknown, at: string, bad: (f: string, d: string) => never, baseDir: string): PolicyConfig {
  const f = fields(raw, at, POLICY, bad, baseDir);
  if (!f.has('policies')) bad(f.p('policies'), 'missing');
  if (!Array.isArray(f.o.policies)) bad(f.p('policies'), `must be an array (got ${describe(f.o.policies)})`);
  const raws = f.o.policies as unknown[];
  if (raws.length === 0) bad(f.p('policies'), 'must list at least one resource policy');
  const byResource = new Map<Resource, number>();
  const policies = raws.map((pr, i): ResourcePolicy => {
    const p = fields(pr, `${f.p('policies')}[${i}]`, RESOURCE_POLICY, bad, baseDir);
    const resource = p.oneOf('resource', RESOURCES)!;
    if (byResource.has(resource)) bad(p.p('resource'), `duplicate resource ${JSON.stringify(resource)} (also ${f.p('policies')}[${byResource.get(resource)}])`);
    byResource.set(resource, i);
    const out: ResourcePolicy = { resource, vmThreshold: p.num('vmThreshold', FRACTION, isFraction, true)!, target: p.num('target', FRACTION, isFraction, true)! };
    const ct = p.num('containerThreshold', FRACTION, isFraction);
    if (ct !== undefined) out.containerThreshold = ct;
    const vt = p.num('vmTarget', FRACTION, isFraction);
    if (vt !== undefined) out.vmTarget = vt;
    if (p.has('containerThresholds')) {
      const m = p.o.containerThresholds;
      if (typeof m !== 'object' || m === null || Array.isArray(m)) bad(p.p('containerThresholds'), `must be an object {"<container name>": fraction} (got ${describe(m)})`);
      const cts: Record<string, number> = {};
      const inner = fields(m, p.p('containerThresholds'), Object.keys(m as Obj), bad, baseDir);
      for (const k of Object.keys(m as Obj)) cts[k] = inner.num(k, FRACTION, isFraction)!;
      out.containerThresholds = cts;
    }
    return out;
  });

  const cfg: PolicyConfig = { policies };
  if (f.has('capacities')) {
    const c = fields(f.o.capacities, f.p('capacities'), CAPACITIES, bad, baseDir);
    cfg.capacities = {};
    for (const k of CAPACITIES) {
      const v = c.num(k, 'a number of bytes per second > 0', (n) => n > 0);
      if (v !== undefined) cfg.capacities[k] = v;
    }
  }
  const set = <K extends keyof PolicyConfig>(k: K, v: PolicyConfig[K] | undefined) => {
    if (v !== undefined) cfg[k] = v;
  };
  set('tolerance', f.num('tolerance', 'a number >= 0 and < 1', (n) => n >= 0 && n < 1));
  set('scaleUpCooldownMs', f.num('scaleUpCooldownMs', 'a number of milliseconds 0..86400000', (n) => n >= 0 && n <= DAY_MS));
  set('scaleDownWindowMs', f.num('scaleDownWindowMs', 'a number of milliseconds 0..86400000', (n) => n >= 0 && n <= DAY_MS));
  set('minReplicas', f.int('minReplicas', 1, 1000));
  set('maxReplicas', f.int('maxReplicas', 1, 1000));
  const min = cfg.minReplicas ?? 1;
  const max = cfg.maxReplicas ?? 10;
  if (min > max) bad(f.has('maxReplicas') ? f.p('maxReplicas') : f.p('minReplicas'), `minReplicas (${min}) is above maxReplicas (${max}${f.has('maxReplicas') ? '' : ', the default'})`);
  set('trendPoints', f.num('trendPoints', 'an integer 2..1000 (a slope needs two points)', (n) => Number.isInteger(n) && n >= 2 && n <= 1000));
  set('trendHorizonS', f.num('trendHorizonS', 'a number of seconds 0..86400', (n) => n >= 0 && n <= 86400));
  set('trendMinShare', f.num('trendMinShare', 'a fraction 0..1', (n) => n >= 0 && n <= 1));
  set('maxRateGapMs', f.num('maxRateGapMs', 'a number of milliseconds > 0', (n) => n > 0 && n <= DAY_MS));
  return cfg;
}

function validateProvisioner(raw: unknown, at: string, bad: (f: string, d: string) => never, baseDir: string): ReplicaProvisionerConfig {
  const f = fields(raw, at, PROVISIONER, bad, baseDir);
  const kind = f.oneOf('kind', PROVISIONER_KINDS)!;
  // qemu-direct's template is a disk image (a path); libvirt's is a domain name
  const template = kind === 'qemu-direct' ? f.path('template', true)! : f.str('template', true)!;
  if (kind === 'libvirt' && !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(template)) bad(f.p('template'), `must be the name of the template domain (got ${describe(template)})`);
  if (kind !== 'libvirt' && f.has('uri')) bad(f.p('uri'), 'only with kind "libvirt"');
  const cmdline = f.str('cmdline', true)!;
  if (!cmdline.includes('{container}')) bad(f.p('cmdline'), `must contain {container} (each replica is told which one container to run) (got ${describe(cmdline)})`);
  const out: ReplicaProvisionerConfig = {
    kind,
    template,
    kernel: f.path('kernel', true)!,
    initrd: f.path('initrd', true)!,
    cmdline,
    vcpus: f.int('vcpus', 1, 1024, true)!,
    memMiB: f.int('memMiB', 16, 16 * 1024 * 1024, true)!,
    disk: f.oneOf('disk', DISKS, 'overlay')!,
  };
  if (kind === 'libvirt') out.uri = f.str('uri') ?? DEFAULT_LIBVIRT_URI;
  const dir = f.path('dir');
  if (dir) out.dir = dir;
  if (f.has('ready')) {
    const r = f.o.ready;
    if (r !== null && (typeof r !== 'string' || r.trim() === '')) bad(f.p('ready'), `must be a non-empty string or null (do not wait) (got ${describe(r)})`);
    out.ready = r as string | null;
  }
  if (f.has('addresses')) {
    const a = f.o.addresses;
    if (!Array.isArray(a) || a.length === 0) bad(f.p('addresses'), `must be a non-empty array of IPv4 addresses like "10.0.0.20/24" (got ${describe(a)})`);
    const seen = new Set<string>();
    (a as unknown[]).forEach((x, i) => {
      if (typeof x !== 'string' || !IPV4_CIDR.test(x) || x.split('/')[0]!.split('.').some((o) => Number(o) > 255) || Number(x.split('/')[1] ?? 32) > 32) {
        bad(`${f.p('addresses')}[${i}]`, `must be an IPv4 address, optionally with /prefix, like "10.0.0.20/24" (got ${describe(x)})`);
      }
      const ip = (x as string).split('/')[0]!;
      if (seen.has(ip)) bad(`${f.p('addresses')}[${i}]`, `duplicate address ${ip}`);
      seen.add(ip);
    });
    if (!cmdline.includes('{ip}')) bad(f.p('cmdline'), `must contain {ip} when "addresses" is given (each replica is told its address there) (got ${describe(cmdline)})`);
    out.addresses = a as string[];
  } else if (cmdline.includes('{ip}')) {
    bad(f.p('cmdline'), 'contains {ip} but there are no "addresses" to fill it with');
  }
  return out;
}

const IPV4_CIDR = /^\d{1,3}(\.\d{1,3}){3}(\/\d{1,2})?$/;

/** Parse a config text (JSON). */
export function parseAutoscaleConfig(text: string, file: string, baseDir?: string): AutoscaleConfig {
  return validateAutoscaleConfig(parseJson(text, file), file, baseDir);
}

/** Read and validate a config file. */
export function loadAutoscaleConfig(file: string): AutoscaleConfig {
  return parseAutoscaleConfig(readConfigText(file), file);
}
