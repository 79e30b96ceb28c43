// What the JSON configs of `ciel monitor --config` (monitor/config.ts) and `ciel autoscale --config`
// (controller/config.ts) share: reading the file, parsing JSON with a line:column, and zod schemas whose
// every failure reads `FILE: field.path[1].x: must be ... (got VALUE)`.
//
// The schemas are plain zod; only the wording is ours. Each leaf carries an error map that turns zod's
// issue into "missing" or "must be WANT (got VALUE)" (zod's own messages name the type, not the
// value, and not the unit a field is in). Cross-field rules are superRefine issues with their message.

import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import { BadFieldError, BadInputError } from './errors.ts';

/** A value as error messages show it: `"kvm"`, `number 0`, `an object`, `null`. */
export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${String(v)}`;
}

/** Error map of a leaf: absent → `missing` (or the given explanation), else `must be WANT (got VALUE)`. */
export function mustBe(want: string, missing = 'missing'): z.ZodErrorMap {
  return (_issue, ctx) => ({ message: ctx.data === undefined ? missing : `must be ${want} (got ${describe(ctx.data)})` });
}

/** A string that is not blank. */
export function text(missing?: string) {
  return z.string({ errorMap: mustBe('a non-empty string', missing) }).regex(/\S/);
}

/** A non-blank string that must match `re`; `want` words it for the message. */
export function matching(re: RegExp, want: string) {
  return text().refine(
    (s) => re.test(s),
    (s) => ({ message: `must be ${want} (got ${describe(s)})` }),
  );
}

/** A path; a relative one is resolved against `baseDir` (the config file's directory). */
export function path(baseDir: string, missing?: string) {
  return text(missing).transform((p) => (isAbsolute(p) ? p : resolve(baseDir, p)));
}

/** One of a fixed list of strings. */
export function oneOf<T extends string>(values: readonly [T, ...T[]]) {
  return z.enum(values, { errorMap: mustBe(`one of ${values.join(', ')}`) });
}

/** A finite number; `want` says the range and unit for the message (checks are added by the caller). */
export function num(want: string) {
  return z.number({ errorMap: mustBe(want) }).finite();
}

/** An integer min..max. */
export function int(min: number, max: number, want = `an integer ${min}..${max}`) {
  return num(want).int().min(min).max(max);
}

/** An array; `empty` is the message for an empty one (when at least one item is needed). */
export function list<T extends z.ZodTypeAny>(item: T, empty: string, missing?: string) {
  return z.array(item, {
    errorMap: (issue, ctx) => ({
      message: ctx.data === undefined ? (missing ?? 'missing') : issue.code === 'too_small' ? empty : `must be an array (got ${describe(ctx.data)})`,
    }),
  }).min(1);
}

/** An object with exactly these fields: any other is an error naming the ones it knows. */
export function strictObject<S extends z.ZodRawShape>(shape: S, o: { missing?: string; notObject?: string; unknown?: string } = {}) {
  const known = Object.keys(shape).join(', ');
  return z
    .object(shape, {
      errorMap: (issue, ctx) => ({
        message:
          issue.code === 'unrecognized_keys'
            ? (o.unknown ?? `unknown field (known: ${known})`)
            : ctx.data === undefined
              ? (o.missing ?? 'missing')
              : `must be ${o.notObject ?? 'an object'} (got ${describe(ctx.data)})`,
      }),
    })
    .strict();
}

/** `['vms', 1, 'backend']` → `vms[1].backend`. */
export function fieldPath(p: readonly (string | number)[]): string {
  let s = '';
  for (const k of p) s += typeof k === 'number' ? `[${k}]` : s ? `.${k}` : k;
  return s || '(top level)';
}

/**
 * Validate `raw` against `schema`, or throw a BadFieldError naming `file` and the field. When several
 * fields are wrong, the error's field is one of them: an unknown field first (most likely a typo that
 * explains the rest), else the first in the file's field order; the others follow on lines of their own.
 */
export function parseWith<S extends z.ZodTypeAny>(schema: S, raw: unknown, file: string): z.output<S> {
  const r = schema.safeParse(raw);
  if (r.success) return r.data;
  const issues = r.error.issues;
  // an unknown field is reported at its own path, not its object's
  const at = (i: z.ZodIssue) => fieldPath(i.code === 'unrecognized_keys' ? [...i.path, i.keys[0]!] : i.path);
  const first = issues.find((i) => i.code === 'unrecognized_keys') ?? issues[0]!;
  // the other fields that are wrong too, one line each (a field's first problem only)
  const seen = new Set([at(first)]);
  const more: string[] = [];
  for (const i of issues) {
    const f = at(i);
    if (seen.has(f)) continue;
    seen.add(f);
    more.push(`\n  also ${f}: ${i.message}`);
  }
  throw new BadFieldError(file, at(first), first.message + more.join(''));
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
