// The label sets of Ciel's cAdvisor-compatible series, and their text in the exposition format.
//
// Every container series carries cAdvisor's base labels: id (the cgroup path), name, image, then
// Ciel's vm, then one container_label_<key> per Docker label (Config.Labels), as cAdvisor's
// DefaultContainerLabels does: the key with every character outside [a-zA-Z0-9_] turned into '_'.
// Two keys that sanitize to the same name (a.b and a-b) keep the first in key order, so the label
// set is always valid (cAdvisor would fail that scrape).
//
// Values are guest data: quotes, backslashes and newlines are escaped as the format requires, other
// control characters (and bidi overrides, line separators: someone reads /metrics with curl) become '?', lone UTF-16 surrogates (possible through JSON \ud800 escapes)
// become U+FFFD so the body is valid UTF-8, and a value is cut at MAX_VALUE_CHARS characters.

export const CONTAINER_LABEL_PREFIX = 'container_label_';
export const MAX_VALUE_CHARS = 1024;
/** per container: all container_label_* names and values together */
export const MAX_LABEL_TEXT = 4096;

export type LabelSet = Record<string, string>;

/** Docker label key -> Prometheus label name (prefix + [a-zA-Z0-9_] only; the prefix makes it start with a letter). */
export function containerLabelName(key: string): string {
  return CONTAINER_LABEL_PREFIX + key.replace(/[^a-zA-Z0-9_]/gu, '_'); // per code point, as Go's regexp works on runes
}

/**
 * container_label_* labels of a container's Docker labels, in key order, first key winning a name
 * collision, values cleaned, and at most MAX_LABEL_TEXT characters of names and values in all: the
 * set is repeated on every series of the container, and a guest with many containers full of huge
 * labels must not make one scrape hundreds of megabytes. A label that does not fit is left out.
 */
export function dockerLabelSet(labels: Readonly<Record<string, string>> | undefined): LabelSet {
  const out: LabelSet = {};
  if (!labels) return out;
  let budget = MAX_LABEL_TEXT;
  for (const key of Object.keys(labels).sort()) {
    const name = containerLabelName(key);
    if (name in out) continue;
    const value = cleanValue(labels[key]);
    if (name.length + value.length > budget) continue;
    budget -= name.length + value.length;
    out[name] = value;
  }
  return out;
}

/** A guest string made safe as a label value before escaping (controls, lone surrogates, length). */
export function cleanValue(s: string): string {
  // eslint-disable-next-line no-control-regex
  let v = s.replace(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, '?').replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
  if (v.length > MAX_VALUE_CHARS) {
    const chars = [...v];
    if (chars.length > MAX_VALUE_CHARS) v = chars.slice(0, MAX_VALUE_CHARS - 1).join('') + '…';
  }
  return v;
}

/** The exposition format's escaping of a label value: backslash, double quote, newline. */
export function escapeValue(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** A number as the exposition format writes it (Go's ParseFloat reads JS's shortest round-trip form). */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/** One series line: name{l1="v1",...} value */
export function seriesLine(name: string, labels: LabelSet, value: number): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeValue(cleanValue(v))}"`);
  return `${name}${parts.length ? `{${parts.join(',')}}` : ''} ${formatValue(value)}`;
}
