// The configuration of `ciel autoscale`: which origin VMs to watch (container level through the VMI
// monitor, VM level from /proc of their QEMU or from libvirt), the scaling policy, and optionally how to
// start replicas and tell a load balancer about them.
//
// JSON, validated by one zod schema (common/config-schema.ts, as monitor/config.ts for `ciel monitor`),
// from which the types come: every error is a BadInputError naming the file and the field path
// (`autoscale.json: policy.policies[0].target: must be a fraction > 0 and <= 1 (0.7 = 70 %) (got number
// 0)`), unknown fields are errors, relative paths are resolved against the directory of the config file.

import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { describe, int, list, matching, num, oneOf, parseJson, parseWith, path, readConfigText, strictObject, text } from '../common/config-schema.ts';
import { policyConfigSchema } from './policy-config.ts';

export const DEFAULT_AUTOSCALE_INTERVAL = 1;
export const DEFAULT_LIBVIRT_URI = 'qemu:///system';
export const PROVISIONER_KINDS = ['qemu-direct', 'libvirt'] as const;
export const BASELINES = ['kept', 'on-demand'] as const;
const DISKS = ['overlay', 'sparse-copy'] as const;

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const IPV4_CIDR = /^\d{1,3}(\.\d{1,3}){3}(\/\d{1,2})?$/;
const LEVEL = 'a QEMU started directly is read at the container level through its QMP socket and RAM file';
const PID_OR_LIBVIRT = '"pid" of a QEMU process started directly, or "libvirt" with the domain name';

/** Where the VM-level (cheap, every interval) statistics of an origin VM come from. */
export type VmLevelSource =
  /** /proc/<pid> of a QEMU process started directly (ProcVmStats); capacity from vcpus/memMiB */
  | { kind: 'proc'; pid: number; vcpus: number; memMiB: number }
  /** `virsh -c URI domstats DOMAIN` */
  | { kind: 'libvirt'; domain: string; uri: string };

/** One origin VM as written in the file; the output gathers its VM-level source into `stats`. */
function vmSchema(baseDir: string) {
  return strictObject({
    name: matching(NAME, "letters, digits, '.', '_' or '-'"),
    /** guest kernel release of the monitor build (generated/<release>/); absent: read from the guest */
    kernel: matching(/^\d+\.\d+[^\s/]*$/, 'a kernel release like 6.1.0-56-amd64').optional(),
    /**
     * QMP socket (registers, pause/resume) and guest RAM file: the container level of a QEMU started
     * directly. A libvirt VM without them is read through libvirt's QMP passthrough and its shared RAM.
     */
    qmp: path(baseDir).optional(),
    memory: path(baseDir).optional(),
    pid: int(1, 4194304).optional(),
    libvirt: text().optional(),
    uri: text().optional(),
    vcpus: int(1, 1024).optional(),
    memMiB: int(1, 16 * 1024 * 1024).optional(),
    /** Docker id → service name (wins over names read from the disk) */
    names: z
      .record(z.string(), text(), { errorMap: (_i, ctx) => ({ message: `must be an object {"<docker id>": "<service name>"} (got ${describe(ctx.data)})` }) })
      .superRefine((n, ctx) => {
        if (Object.keys(n).some((id) => id.trim() === '')) ctx.addIssue({ code: 'custom', message: 'an empty container id' });
      })
      .default({}),
    /** disk image to read container names from (/var/lib/docker, as `ciel monitor --disk`) */
    disk: path(baseDir).optional(),
  })
    .superRefine((v, ctx) => {
      const bad = (field: string, message: string) => ctx.addIssue({ code: 'custom', path: [field], message });
      if (v.pid !== undefined && v.libvirt !== undefined) return bad('libvirt', `not with "pid" (give exactly one: ${PID_OR_LIBVIRT})`);
      if (v.libvirt === undefined || v.qmp !== undefined || v.memory !== undefined)
        for (const k of ['qmp', 'memory'] as const)
          if (v[k] === undefined)
            bad(k, v.libvirt === undefined ? `missing (${LEVEL})` : `missing (give "qmp" and "memory" together, or neither: the domain is then read through libvirt)`);
      if (v.pid !== undefined) {
        if (v.uri !== undefined) bad('uri', 'only with "libvirt" (the libvirt connection of the domain)');
        if (v.vcpus === undefined) bad('vcpus', 'missing (needed with "pid": VM-level CPU utilisation is CPU time / vCPUs)');
        if (v.memMiB === undefined) bad('memMiB', 'missing (needed with "pid": VM-level memory utilisation is RSS / memMiB)');
      } else if (v.libvirt !== undefined) {
        for (const k of ['vcpus', 'memMiB'] as const) if (v[k] !== undefined) bad(k, 'only with "pid" (libvirt reports it in domstats)');
      } else {
        bad('pid', `missing (give ${PID_OR_LIBVIRT})`);
      }
    })
    .transform(({ pid, libvirt, uri, vcpus, memMiB, disk, ...v }) => {
      // the refinement above guarantees one source, complete
      const stats: VmLevelSource = pid !== undefined ? { kind: 'proc', pid, vcpus: vcpus!, memMiB: memMiB! } : { kind: 'libvirt', domain: libvirt!, uri: uri ?? DEFAULT_LIBVIRT_URI };
      return { ...v, stats, ...(disk ? { disk } : {}) };
    });
}

/** How replicas are started (optional: without it, a dry run). */
function provisionerSchema(baseDir: string) {
  return strictObject({
    kind: oneOf(PROVISIONER_KINDS),
    /** qemu-direct: the qcow2 template disk (a path, resolved below); libvirt: the template domain's name */
    template: text(),
    /** libvirt connection URI */
    uri: text().optional(),
    kernel: path(baseDir),
    initrd: path(baseDir),
    /** kernel command line of a replica; `{container}` (required) and `{name}` are filled in */
    cmdline: text().refine(
      (c) => c.includes('{container}'),
      (c) => ({ message: `must contain {container} (each replica is told which one container to run) (got ${describe(c)})` }),
    ),
    vcpus: int(1, 1024),
    memMiB: int(16, 16 * 1024 * 1024),
    disk: oneOf(DISKS).default('overlay'),
    /** where clones' disks, logs and sockets go (default: the provisioner's cache directory) */
    dir: path(baseDir).optional(),
    /** serial-console line that marks a replica ready (`{container}` filled in); null: do not wait */
    ready: z.union([text(), z.null()], { errorMap: (_i, ctx) => ({ message: `must be a non-empty string or null (do not wait) (got ${describe(ctx.data)})` }) }).optional(),
    /**
     * Addresses for replicas (IPv4, optionally /prefix), filled in for `{ip}` in the cmdline and told to
     * the balancer hook; each replica holds one while it exists (a paused pooled replica keeps its own)
     */
    addresses: z
      .array(
        z.string().refine(
          (x) => IPV4_CIDR.test(x) && !x.split('/')[0]!.split('.').some((o) => Number(o) > 255) && Number(x.split('/')[1] ?? 32) <= 32,
          (x) => ({ message: `must be an IPv4 address, optionally with /prefix, like "10.0.0.20/24" (got ${describe(x)})` }),
        ),
        { errorMap: (_i, ctx) => ({ message: `must be a non-empty array of IPv4 addresses like "10.0.0.20/24" (got ${describe(ctx.data)})` }) },
      )
      .min(1)
      .superRefine((a, ctx) => {
        const seen = new Set<string>();
        a.forEach((x, i) => {
          const ip = x.split('/')[0]!;
          if (seen.has(ip)) ctx.addIssue({ code: 'custom', path: [i], message: `duplicate address ${ip}` });
          seen.add(ip);
        });
      })
      .optional(),
  })
    .superRefine((p, ctx) => {
      const bad = (field: string, message: string) => ctx.addIssue({ code: 'custom', path: [field], message });
      if (p.kind === 'libvirt' && !NAME.test(p.template)) bad('template', `must be the name of the template domain (got ${describe(p.template)})`);
      if (p.kind !== 'libvirt' && p.uri !== undefined) bad('uri', 'only with kind "libvirt"');
      if (p.addresses && !p.cmdline.includes('{ip}'))
        bad('cmdline', `must contain {ip} when "addresses" is given (each replica is told its address there) (got ${describe(p.cmdline)})`);
      if (!p.addresses && p.cmdline.includes('{ip}')) bad('cmdline', 'contains {ip} but there are no "addresses" to fill it with');
    })
    .transform((p) => ({
      ...p,
      // qemu-direct's template is a disk image (a path); libvirt's is a domain name
      template: p.kind === 'qemu-direct' ? resolve(baseDir, p.template) : p.template,
      ...(p.kind === 'libvirt' ? { uri: p.uri ?? DEFAULT_LIBVIRT_URI } : {}),
    }));
}

/** The whole file. */
export function autoscaleConfigSchema(baseDir: string) {
  return strictObject(
    {
      /** seconds between VM-level checks */
      interval: num('a number of seconds between 0.01 and 86400').min(0.01).max(86400).default(DEFAULT_AUTOSCALE_INTERVAL),
      containerBaseline: oneOf(BASELINES).default('kept'),
      vms: list(vmSchema(baseDir), 'must list at least one VM').superRefine((vms, ctx) => {
        const seen = new Map<string, number>();
        const services = new Map<string, string>();
        vms.forEach((vm, i) => {
          if (seen.has(vm.name)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `duplicate VM name ${JSON.stringify(vm.name)} (also vms[${seen.get(vm.name)}])` });
          seen.set(vm.name, i);
          for (const [id, svc] of Object.entries(vm.names)) {
            const other = services.get(svc);
            if (other !== undefined && other !== vm.name)
              ctx.addIssue({
                code: 'custom',
                path: [i, 'names', id],
                message: `service name ${JSON.stringify(svc)} is also used in VM ${other} (containers are keyed by name: names must be unique across VMs)`,
              });
            services.set(svc, vm.name);
          }
        });
      }),
      policy: policyConfigSchema,
      provisioner: provisionerSchema(baseDir).optional(),
      balancer: strictObject({ hook: path(baseDir) }).optional(),
    },
    { notObject: 'an object with "vms" and "policy"' },
  );
}

export type AutoscaleConfig = z.output<ReturnType<typeof autoscaleConfigSchema>>;
export type AutoscaleVm = AutoscaleConfig['vms'][number];
export type ReplicaProvisionerConfig = NonNullable<AutoscaleConfig['provisioner']>;

/** Validate an already parsed config object; `file` names it in errors, `baseDir` resolves relative paths. */
export function validateAutoscaleConfig(raw: unknown, file: string, baseDir = dirname(resolve(file))): AutoscaleConfig {
  return parseWith(autoscaleConfigSchema(baseDir), raw, file);
}

/** Parse a config text (JSON). */
export function parseAutoscaleConfig(text: string, file: string, baseDir?: string): AutoscaleConfig {
  return validateAutoscaleConfig(parseJson(text, file), file, baseDir);
}

/** Read and validate a config file. */
export function loadAutoscaleConfig(file: string): AutoscaleConfig {
  return parseAutoscaleConfig(readConfigText(file), file);
}
