// A small self-contained SVG line plot (no dependency): per-container CPU over time with vertical event
// markers (detection, decision, replica ready, scale-in), like the paper's Fig. 12.

export interface PlotSeries {
  name: string;
  /** [x seconds, y] points, x increasing */
  points: [number, number][];
  color?: string;
  dashed?: boolean;
}

export interface PlotMarker {
  x: number;
  label: string;
  color?: string;
}

export interface PlotOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: PlotSeries[];
  markers?: PlotMarker[];
  /** horizontal reference lines, e.g. a threshold */
  hlines?: { y: number; label: string; color?: string }[];
  width?: number;
  height?: number;
  yMax?: number;
}

const PALETTE = ['#d62728', '#1f77b4', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** "Nice" tick step for a range (1, 2, 5 × 10^k) giving about `n` ticks. */
function niceStep(range: number, n: number): number {
  if (!(range > 0)) return 1;
  const raw = range / n;
  const p = 10 ** Math.floor(Math.log10(raw));
  const m = raw / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

function num(x: number): string {
  return Number(x.toFixed(2)).toString();
}

export function plotSvg(o: PlotOptions): string {
  const W = o.width ?? 1000;
  const H = o.height ?? 420;
  const legendW = Math.min(300, 60 + 7 * Math.max(0, ...o.series.map((x) => x.name.length)));
  const m = { l: 64, r: legendW, t: 40, b: 52 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const xs = o.series.flatMap((s) => s.points.map((p) => p[0])).concat((o.markers ?? []).map((k) => k.x));
  const ys = o.series.flatMap((s) => s.points.map((p) => p[1])).concat((o.hlines ?? []).map((h) => h.y));
  const x0 = xs.length ? Math.min(...xs) : 0;
  const x1 = xs.length ? Math.max(...xs, x0 + 1) : 1;
  const yTop = o.yMax ?? Math.max(1e-9, ...ys) * 1.08;
  const X = (x: number) => m.l + ((x - x0) / (x1 - x0)) * pw;
  const Y = (y: number) => m.t + ph - (Math.max(0, Math.min(y, yTop)) / yTop) * ph;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${m.l + pw / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${esc(o.title)}</text>`);
  // grid and ticks
  const xs0 = niceStep(x1 - x0, 10);
  for (let x = Math.ceil(x0 / xs0) * xs0; x <= x1 + 1e-9; x += xs0) {
    out.push(`<line x1="${X(x)}" y1="${m.t}" x2="${X(x)}" y2="${m.t + ph}" stroke="#eee"/>`);
    out.push(`<text x="${X(x)}" y="${m.t + ph + 16}" text-anchor="middle">${num(x)}</text>`);
  }
  const ys0 = niceStep(yTop, 6);
  for (let y = 0; y <= yTop + 1e-9; y += ys0) {
    out.push(`<line x1="${m.l}" y1="${Y(y)}" x2="${m.l + pw}" y2="${Y(y)}" stroke="#eee"/>`);
    out.push(`<text x="${m.l - 6}" y="${Y(y) + 4}" text-anchor="end">${num(y)}</text>`);
  }
  out.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  out.push(`<text x="${m.l + pw / 2}" y="${H - 12}" text-anchor="middle">${esc(o.xLabel)}</text>`);
  out.push(`<text transform="translate(16 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}</text>`);
  for (const h of o.hlines ?? []) {
    const c = h.color ?? '#999';
    out.push(`<line x1="${m.l}" y1="${Y(h.y)}" x2="${m.l + pw}" y2="${Y(h.y)}" stroke="${c}" stroke-dasharray="2 3"/>`);
    out.push(`<text x="${m.l + 4}" y="${Y(h.y) - 4}" fill="${c}">${esc(h.label)}</text>`);
  }
  // markers
  (o.markers ?? []).forEach((k, i) => {
    const c = k.color ?? '#555';
    out.push(`<line x1="${X(k.x)}" y1="${m.t}" x2="${X(k.x)}" y2="${m.t + ph}" stroke="${c}" stroke-dasharray="6 4" stroke-width="1.5"/>`);
    const right = X(k.x) > m.l + pw * 0.75;
    out.push(`<text x="${X(k.x) + (right ? -3 : 3)}" y="${m.t + 14 + (i % 4) * 14}" fill="${c}"${right ? ' text-anchor="end"' : ''}>${esc(k.label)}</text>`);
  });
  // series
  o.series.forEach((s, i) => {
    const c = s.color ?? PALETTE[i % PALETTE.length]!;
    if (s.points.length) {
      const d = s.points.map((p, j) => `${j ? 'L' : 'M'}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(' ');
      out.push(`<path d="${d}" fill="none" stroke="${c}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 3"' : ''}/>`);
    }
    const ly = m.t + 10 + i * 20;
    out.push(`<line x1="${m.l + pw + 12}" y1="${ly}" x2="${m.l + pw + 36}" y2="${ly}" stroke="${c}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 3"' : ''}/>`);
    out.push(`<text x="${m.l + pw + 42}" y="${ly + 4}">${esc(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** Several plots (each a plotSvg output) stacked top to bottom in one SVG, under one title. */
export function stackSvg(title: string, plots: string[]): string {
  const size = (svg: string) => {
    const m = /<svg[^>]*\swidth="(\d+(?:\.\d+)?)"[^>]*\sheight="(\d+(?:\.\d+)?)"/.exec(svg);
    return { w: Number(m?.[1] ?? 1000), h: Number(m?.[2] ?? 420) };
  };
  const W = Math.max(...plots.map((p) => size(p).w), 400);
  const out: string[] = [];
  let y = 36;
  for (const p of plots) {
    // a nested <svg> keeps each plot's own coordinates; only its position changes
    out.push(p.replace('<svg ', `<svg x="0" y="${y}" `));
    y += size(p).h;
  }
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y}" viewBox="0 0 ${W} ${y}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${y}" fill="white"/>`,
    `<text x="${W / 2}" y="24" text-anchor="middle" font-size="17" font-weight="bold">${esc(title)}</text>`,
    ...out,
    '</svg>',
  ].join('\n');
}
