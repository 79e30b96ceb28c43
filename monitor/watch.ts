// `ciel monitor --json | tsx monitor/watch.ts [--prometheus [HOST:]PORT]`
// Reads one Sample per line (any number of VMs interleaved), shows the live table on stdout
// (in place on a TTY, plain lines otherwise) and optionally serves /metrics.
// Bad lines are reported on stderr and skipped; the view keeps going.

import { createInterface } from 'node:readline';
import type { Sample } from '../vmi/sample.ts';
import { LiveTable } from './live-table.ts';
import { RateTracker } from '../vmi/rates.ts';

export interface WatchOptions {
  input: NodeJS.ReadableStream;
  output: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  errors: NodeJS.WritableStream;
  /** serve /metrics too */
  prometheus?: { host: string; port: number };
}

function isSample(x: unknown): x is Sample {
  const s = x as Sample;
  return typeof s === 'object' && s !== null && typeof s.time === 'string' && Array.isArray(s.containers);
}

export async function watch(opts: WatchOptions): Promise<void> {
  const tracker = new RateTracker();
  const table = new LiveTable(opts.output);
  let exporter: import('./prometheus.ts').PrometheusExporter | undefined;
  if (opts.prometheus) {
    const { PrometheusExporter } = await import('./prometheus.ts');
    exporter = new PrometheusExporter(opts.prometheus);
    const a = await exporter.listen();
    opts.errors.write(`metrics at ${a.url}\n`);
  }
  let n = 0;
  try {
    for await (const line of createInterface({ input: opts.input, crlfDelay: Infinity })) {
      n++;
      if (!line.trim()) continue;
      let s: unknown;
      try {
        s = JSON.parse(line);
      } catch {
        opts.errors.write(`line ${n}: not JSON, skipped\n`);
        continue;
      }
      if (!isSample(s)) {
        opts.errors.write(`line ${n}: not a sample (needs "time" and "containers"), skipped\n`);
        continue;
      }
      try {
        table.update(tracker.update(s));
        exporter?.observe(s);
      } catch (e) {
        opts.errors.write(`line ${n}: ${(e as Error).message}, skipped\n`);
      }
    }
  } finally {
    await exporter?.close();
  }
}

function parseListen(v: string): { host: string; port: number } {
  const m = /^(?:(.+):)?(\d+)$/.exec(v);
  if (!m) throw new Error(`--prometheus wants [HOST:]PORT, got ${JSON.stringify(v)}`);
  return { host: m[1] ?? '127.0.0.1', port: Number(m[2]) };
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const args = process.argv.slice(2);
  const i = args.indexOf('--prometheus');
  const prometheus = i >= 0 ? parseListen(args[i + 1] ?? '') : undefined;
  watch({ input: process.stdin, output: process.stdout, errors: process.stderr, prometheus }).catch((e: unknown) => {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exit(1);
  });
}
