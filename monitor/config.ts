// The multi-VM configuration of `ciel monitor` as a daemon: which VMs, through which backend.
//
// JSON, validated by a zod schema (common/config-schema.ts); every error names the file and the field (e.g.
// `ciel.json: vms[1].backend: must be one of qemu, vmcore, xen, raw, libvirt (got "kvm")`).
// A libvirt domain is `{"name": ..., "libvirt": "DOMAIN", "connect": "URI"}` (backend libvirt implied).
// Unknown fields are errors too, so a typo ("intervall") does not pass silently.
// Relative paths are resolved against the directory of the config file.
// (YAML was not worth a dependency: the file is small and generated or hand-written once.)

import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { DOMAIN_NAME } from '../vmi/target.ts';
import { int, list, matching, num, oneOf, parseJson, parseWith, path, readConfigText, strictObject, text } from '../common/config-schema.ts';


export const BACKENDS = ['qemu', 'vmcore', 'xen', 'raw', 'libvirt'] as const;
export type BackendKind = (typeof BACKENDS)[number];

export const DEFAULT_INTERVAL = 1;

/** fields each backend needs, besides name/backend/kernel */
const REQUIRED = {
  qemu: ['qmp', 'memory'],
  vmcore: ['vmcore'],
  xen: ['domid'],
  raw: ['memory'],
  libvirt: ['libvirt'],
} as const satisfies Record<BackendKind, readonly string[]>;
/** fields that make no sense for a backend (probably a mistake) */
const ONLY_FOR = {
  qmp: ['qemu'],
  memory: ['qemu', 'raw'],
  vmcore: ['vmcore'],
  domid: ['xen'],
  libvirt: ['libvirt'],
  connect: ['libvirt'],
} as const satisfies Record<string, readonly BackendKind[]>;

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const RELEASE = /^\d+\.\d+[^\s/]*$/;

/** One VM to watch; relative paths resolve against `baseDir`. */
function vmSchema(baseDir: string) {
  return strictObject({
    /** unique; used in metrics labels and the live view */
    name: matching(NAME, "letters, digits, '.', '_' or '-'"),
    /** absent with "libvirt": libvirt */
    backend: oneOf(BACKENDS).optional(),
    /** QMP socket path (qemu) */
    qmp: path(baseDir).optional(),
    /** guest RAM file: the shared memory-backend-file (qemu) or a raw dump (raw) */
    memory: path(baseDir).optional(),
    /** ELF vmcore path (vmcore) */
    vmcore: path(baseDir).optional(),
    /** Xen domain id (xen) */
    domid: int(1, 0x7fef, 'a guest domain id, an integer 1..32751').optional(),
    /** libvirt domain name (libvirt): RAM from its QEMU process, QMP through libvirt's passthrough */
    libvirt: matching(DOMAIN_NAME, "a libvirt domain name (no '/', not starting with '-')").optional(),
    /** libvirt connection URI (libvirt; default qemu:///system) */
    connect: text().optional(),
    /** guest kernel release, e.g. 6.1.0-56-amd64; absent: read from the guest */
    kernel: matching(RELEASE, 'a kernel release like 6.1.0-56-amd64').optional(),
    /** guest disk image (raw or qcow2) to read container names from */
    disk: path(baseDir).optional(),
    /** seconds between samples */
    interval: num('a number of seconds between 0.01 and 86400').min(0.01).max(86400).default(DEFAULT_INTERVAL),
  })
    .superRefine((v, ctx) => {
      const backend = v.backend ?? (v.libvirt !== undefined ? 'libvirt' : undefined);
      if (!backend) return ctx.addIssue({ code: 'custom', path: ['backend'], message: 'missing' });
      const needs: readonly string[] = REQUIRED[backend];
      for (const k of needs)
        if (v[k as keyof typeof v] === undefined) ctx.addIssue({ code: 'custom', path: [k], message: `missing (backend ${backend} needs ${needs.join(' and ')})` });
      for (const [k, kinds] of Object.entries(ONLY_FOR) as [keyof typeof ONLY_FOR, readonly BackendKind[]][])
        if (v[k] !== undefined && !kinds.includes(backend)) ctx.addIssue({ code: 'custom', path: [k], message: `not used by backend ${backend} (only by ${kinds.join(', ')})` });
    })
    // the refinement above guarantees a backend
    .transform((v) => ({ ...v, backend: (v.backend ?? 'libvirt') as BackendKind }));
}

/** The whole file: `{"vms": [...]}`. */
export function cielConfigSchema(baseDir: string) {
  return strictObject(
    {
      vms: list(vmSchema(baseDir), 'must list at least one VM')
        .superRefine((vms, ctx) => {
          const seen = new Map<string, number>();
          vms.forEach((v, i) => {
            if (seen.has(v.name)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `duplicate VM name ${JSON.stringify(v.name)} (also vms[${seen.get(v.name)}])` });
            seen.set(v.name, i);
          });
        }),
    },
    { notObject: 'an object with "vms"', unknown: 'unknown field (expected only "vms")' },
  );
}

export type VmConfig = z.output<ReturnType<typeof vmSchema>>;
export type CielConfig = z.output<ReturnType<typeof cielConfigSchema>>;

/** Validate an already parsed config object; `file` names it in errors, `baseDir` resolves relative paths. */
export function validateConfig(raw: unknown, file: string, baseDir = dirname(resolve(file))): CielConfig {
  return parseWith(cielConfigSchema(baseDir), raw, file);
}

/** Parse a config text (JSON). */
export function parseConfig(text: string, file: string, baseDir?: string): CielConfig {
  return validateConfig(parseJson(text, file), file, baseDir);
}

/** Read and validate a config file. */
export function loadConfig(file: string): CielConfig {
  return parseConfig(readConfigText(file), file);
}
