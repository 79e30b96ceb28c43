// The multi-VM configuration of `ciel monitor` as a daemon: which VMs, through which backend.
//
// JSON, validated field by field; every error names the file and the field (e.g.
// `ciel.json: vms[1].backend: must be one of qemu, vmcore, xen, raw (got "kvm")`).
// Unknown fields are errors too, so a typo ("intervall") does not pass silently.
// Relative paths are resolved against the directory of the config file.
// (YAML was not worth a dependency: the file is small and generated or hand-written once.)

import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { BadInputError } from '../common/errors.ts';

export const BACKENDS = ['qemu', 'vmcore', 'xen', 'raw'] as const;
export type BackendKind = (typeof BACKENDS)[number];

export interface VmConfig {
  /** unique; used in metrics labels and the live view */
  name: string;
  backend: BackendKind;
  /** QMP socket path (qemu) */
  qmp?: string;
  /** guest RAM file: the shared memory-backend-file (qemu) or a raw dump (raw) */
  memory?: string;
  /** ELF vmcore path (vmcore) */
  vmcore?: string;
  /** Xen domain id (xen) */
  domid?: number;
  /** guest kernel release, e.g. 6.1.0-56-amd64 */
  kernel: string;
  /** guest disk image (raw or qcow2) to read container names from */
  disk?: string;
  /** seconds between samples */
  interval: number;
}

export interface CielConfig {
  vms: VmConfig[];
}

export const DEFAULT_INTERVAL = 1;

/** fields each backend needs, besides name/backend/kernel */
const REQUIRED: Record<BackendKind, (keyof VmConfig)[]> = {
  qemu: ['qmp', 'memory'],
  vmcore: ['vmcore'],
  xen: ['domid'],
  raw: ['memory'],
};
/** fields that make no sense for a backend (probably a mistake) */
const ONLY_FOR: Partial<Record<keyof VmConfig, BackendKind[]>> = {
  qmp: ['qemu'],
  memory: ['qemu', 'raw'],
  vmcore: ['vmcore'],
  domid: ['xen'],
};
const VM_FIELDS = new Set(['name', 'backend', 'qmp', 'memory', 'vmcore', 'domid', 'kernel', 'disk', 'interval']);
const PATH_FIELDS = ['qmp', 'memory', 'vmcore', 'disk'] as const;

/** A value as error messages show it: `"kvm"`, `number 0`, `an object`, `null`. */
export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${String(v)}`;
}

/** Validate an already parsed config object; `file` names it in errors, `baseDir` resolves relative paths. */
export function validateConfig(raw: unknown, file: string, baseDir = dirname(resolve(file))): CielConfig {
  const bad = (field: string, detail: string): never => {
    throw new BadInputError(file, `${field}: ${detail}`);
  };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) bad('(top level)', `must be an object with "vms" (got ${describe(raw)})`);
  const top = raw as Record<string, unknown>;
  for (const k of Object.keys(top)) if (k !== 'vms') bad(k, 'unknown field (expected only "vms")');
  if (!('vms' in top)) bad('vms', 'missing');
  if (!Array.isArray(top.vms)) bad('vms', `must be an array (got ${describe(top.vms)})`);
  const list = top.vms as unknown[];
  if (list.length === 0) bad('vms', 'must list at least one VM');

  const seen = new Map<string, number>();
  const vms = list.map((v, i): VmConfig => {
    const at = `vms[${i}]`;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) bad(at, `must be an object (got ${describe(v)})`);
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!VM_FIELDS.has(k)) bad(`${at}.${k}`, `unknown field (known: ${[...VM_FIELDS].join(', ')})`);

    const str = (k: string, required: boolean): string | undefined => {
      const x = o[k];
      if (x === undefined) return required ? bad(`${at}.${k}`, 'missing') : undefined;
      if (typeof x !== 'string' || x.trim() === '') bad(`${at}.${k}`, `must be a non-empty string (got ${describe(x)})`);
      return x as string;
    };

    const name = str('name', true)!;
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)) bad(`${at}.name`, `must be letters, digits, '.', '_' or '-' (got ${describe(name)})`);
    if (seen.has(name)) bad(`${at}.name`, `duplicate VM name ${JSON.stringify(name)} (also vms[${seen.get(name)}])`);
    seen.set(name, i);

    const backend = str('backend', true)!;
    if (!(BACKENDS as readonly string[]).includes(backend)) bad(`${at}.backend`, `must be one of ${BACKENDS.join(', ')} (got ${describe(backend)})`);
    const kind = backend as BackendKind;

    const kernel = str('kernel', true)!;
    if (!/^\d+\.\d+[^\s/]*$/.test(kernel)) bad(`${at}.kernel`, `must be a kernel release like 6.1.0-56-amd64 (got ${describe(kernel)})`);

    const out: VmConfig = { name, backend: kind, kernel, interval: DEFAULT_INTERVAL };
    for (const k of PATH_FIELDS) {
      const p = str(k, false);
      if (p !== undefined) out[k] = isAbsolute(p) ? p : resolve(baseDir, p);
    }
    if (o.domid !== undefined) {
      const d = o.domid;
      if (typeof d !== 'number' || !Number.isInteger(d) || d < 1 || d > 0x7fef)
        bad(`${at}.domid`, `must be a guest domain id, an integer 1..32751 (got ${describe(d)})`);
      out.domid = d as number;
    }
    if (o.interval !== undefined) {
      const t = o.interval;
      if (typeof t !== 'number' || !Number.isFinite(t) || t < 0.01 || t > 86400)
        bad(`${at}.interval`, `must be a number of seconds between 0.01 and 86400 (got ${describe(t)})`);
      out.interval = t as number;
    }
    for (const k of REQUIRED[kind]) if (out[k] === undefined) bad(`${at}.${k}`, `missing (backend ${kind} needs ${REQUIRED[kind].join(' and ')})`);
    for (const [k, kinds] of Object.entries(ONLY_FOR) as [keyof VmConfig, BackendKind[]][])
      if (out[k] !== undefined && !kinds.includes(kind)) bad(`${at}.${k}`, `not used by backend ${kind} (only by ${kinds.join(', ')})`);
    return out;
  });
  return { vms };
}

/** Parse a config text (JSON). */
export function parseConfig(text: string, file: string, baseDir?: string): CielConfig {
  return validateConfig(parseJson(text, file), file, baseDir);
}

/** JSON.parse with a BadInputError naming the file and the line:column of a syntax error. */
export function parseJson(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    // point at line:column when the parser gives a position
    const pos = /position (\d+)/.exec(msg);
    let where = '';
    if (pos) {
      const before = text.slice(0, Number(pos[1]));
      const line = before.split('\n').length;
      where = ` at line ${line}, column ${Number(pos[1]) - before.lastIndexOf('\n')}`;
    }
    throw new BadInputError(file, `not valid JSON${where}: ${msg}`);
  }
}

/** A config file's text, or a BadInputError naming the file. */
export function readConfigText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    throw new BadInputError(file, `cannot read the config: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
}

/** Read and validate a config file. */
export function loadConfig(file: string): CielConfig {
  return parseConfig(readConfigText(file), file);
}
