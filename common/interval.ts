// The time syntax of --interval (`ciel monitor`, `ciel autoscale`): one parser for both commands.
import { UsageError } from './errors.ts';

/** The shortest interval anywhere (command line and config files alike): 10 ms. */
export const MIN_INTERVAL_MS = 10;

/** "1s", "250ms", "0.5s", "2m", or a bare number of seconds, in milliseconds. */
export function parseInterval(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text.trim());
  if (!m) throw new UsageError('--interval', `bad interval '${text}' (examples: 1s, 250ms, 0.1s)`);
  const n = Number(m[1]) * (m[2] === 'ms' ? 1 : m[2] === 'm' ? 60_000 : 1000);
  if (n < MIN_INTERVAL_MS) throw new UsageError('--interval', `interval '${text}' is shorter than ${MIN_INTERVAL_MS} ms (the configs' minimum, 0.01 s)`);
  return n;
}
