// Checking that the headers the monitor was compiled with describe the guest kernel's layouts.
//
// Monitor C code declares the struct fields it relies on with CIEL_LAYOUT / CIEL_SIZEOF
// (kernel-src/ciel_layout.h). Each use leaves in the IR a constant global holding the offset
// (or size) the compiler computed from the headers, plus a string naming the struct and field.
// We read those from the textual IR (`clang -S -emit-llvm`) and compare each against the
// kernel's own BTF: headers of the wrong flavour or ABI make the build fail, naming the field.

import { CielError } from '../../common/errors.ts';
import { BtfLookupError, type Btf } from './btf.ts';

export interface LayoutConstant {
  /** struct name without the `struct` keyword */
  struct: string;
  /** dotted field path; undefined for a CIEL_SIZEOF */
  field?: string;
  /** offsetof / sizeof as compiled from the headers */
  value: number;
  /** the IR global it came from */
  global: string;
}

const LINKAGE = String.raw`(?:(?:internal|private|external|dso_local|dso_preemptable|hidden|protected|weak|weak_odr|linkonce|linkonce_odr|available_externally|unnamed_addr|local_unnamed_addr)\s+)*`;
const VALUE_RE = new RegExp(String.raw`^@"?(__ciel_(layout|sizeof)__[A-Za-z0-9_$.]+?)(?:\.\d+)?"?\s*=\s*${LINKAGE}constant\s+i\d+\s+(-?\d+)`, 'gm');
const PATH_RE = new RegExp(String.raw`^@"?__ciel_layout_path__([A-Za-z0-9_$.]+?)(?:\.\d+)?"?\s*=\s*${LINKAGE}constant\s+\[\d+\s+x\s+i8\]\s+c"((?:[^"\\]|\\[0-9A-Fa-f]{2}|\\\\)*)"`, 'gm');

function decodeIrString(s: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '\\') {
      if (s[i + 1] === '\\') {
        bytes.push(0x5c);
        i += 1;
      } else {
        bytes.push(Number.parseInt(s.slice(i + 1, i + 3), 16));
        i += 2;
      }
    } else bytes.push(s.charCodeAt(i));
  }
  return Buffer.from(bytes).toString('utf8').replace(/\0+$/, '');
}

/** Read the CIEL_LAYOUT / CIEL_SIZEOF constants from textual LLVM IR. */
export function extractLayoutConstants(llText: string): LayoutConstant[] {
  const paths = new Map<string, string>();
  for (const m of llText.matchAll(PATH_RE)) paths.set(m[1]!, decodeIrString(m[2]!));
  const out: LayoutConstant[] = [];
  const seen = new Set<string>();
  for (const m of llText.matchAll(VALUE_RE)) {
    const global = m[1]!;
    const kind = m[2]!;
    const value = Number(m[3]!);
    const suffix = global.slice(`__ciel_${kind}__`.length);
    let c: LayoutConstant;
    if (kind === 'sizeof') {
      c = { struct: suffix, value, global };
    } else {
      const named = paths.get(suffix);
      if (named && named.includes(':')) {
        const i = named.indexOf(':');
        c = { struct: named.slice(0, i).trim(), field: named.slice(i + 1).replace(/\s+/g, ''), value, global };
      } else {
        // no path string (e.g. stripped): split the name at the first "__"
        const i = suffix.indexOf('__');
        if (i <= 0) continue;
        c = { struct: suffix.slice(0, i), field: suffix.slice(i + 2).split('__').join('.'), value, global };
      }
    }
    const key = `${c.struct}:${c.field ?? '#size'}:${c.value}`;
    if (seen.has(key)) continue; // the same declaration in several linked files
    seen.add(key);
    out.push(c);
  }
  return out;
}

export interface LayoutCheckResult extends LayoutConstant {
  /** what the kernel's BTF says; undefined when the struct/field is not in the BTF */
  btf?: number;
  ok: boolean;
  /** why the check failed */
  problem?: string;
}

/** One or more declared layouts disagree with the guest kernel. */
export class LayoutMismatchError extends CielError {
  constructor(readonly failures: LayoutCheckResult[]) {
    super(
      `${failures.length} kernel layout(s) differ between the headers and the guest kernel's BTF ` +
        '(headers of another flavour/ABI?):\n' +
        failures.map((f) => `  ${f.problem}`).join('\n'),
    );
  }
}

function describe(c: LayoutConstant): string {
  return c.field === undefined ? `sizeof(struct ${c.struct})` : `offsetof(struct ${c.struct}, ${c.field})`;
}

/**
 * Compare each constant with the BTF. Returns every result; throws LayoutMismatchError listing
 * all failures (struct, field, header value, BTF value) unless `throwOnMismatch` is false.
 */
export function checkLayouts(constants: LayoutConstant[], btf: Btf, opts: { throwOnMismatch?: boolean } = {}): LayoutCheckResult[] {
  const results: LayoutCheckResult[] = [];
  for (const c of constants) {
    let actual: number | undefined;
    let problem: string | undefined;
    try {
      actual = c.field === undefined ? btf.structSize(c.struct) : btf.memberOffset(c.struct, c.field);
    } catch (e) {
      if (!(e instanceof BtfLookupError)) throw e;
      problem = `${describe(c)}: headers say ${c.value}, but the kernel's BTF cannot tell: ${e.message}`;
    }
    if (actual !== undefined && actual !== c.value) {
      problem = `${describe(c)}: headers say ${c.value}, kernel BTF says ${actual}`;
    }
    results.push({ ...c, btf: actual, ok: problem === undefined, problem });
  }
  const failures = results.filter((r) => !r.ok);
  if (failures.length && (opts.throwOnMismatch ?? true)) throw new LayoutMismatchError(failures);
  return results;
}
