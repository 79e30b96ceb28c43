// Human units for the live view: binary prefixes (KiB = 1024 B), three significant digits.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 0 -> "0 B", 1536 -> "1.50 KiB", 123456789 -> "118 MiB" */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return '-';
  const neg = n < 0;
  let v = Math.abs(n);
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  let s: string;
  if (u === 0) s = String(Math.round(v));
  else {
    // three significant digits; 1023.9 KiB rounds to "1024 KiB" rather than a wrong "1.00 MiB"
    s = v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
  }
  return `${neg ? '-' : ''}${s} ${UNITS[u]}`;
}

/** bytes per second; null (no rate yet / counter reset) -> "-" */
export function formatRate(bps: number | null): string {
  return bps === null ? '-' : `${formatBytes(bps)}/s`;
}

/** CPU percent with one decimal; null -> "-" */
export function formatPercent(p: number | null): string {
  return p === null ? '-' : `${p.toFixed(1)}%`;
}
