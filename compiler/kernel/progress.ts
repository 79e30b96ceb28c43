// Progress reporting for long steps (downloads, decompressing a -dbg package): a bar on stderr
// when it is a TTY, a line every few seconds otherwise, and a callback for callers (CLI, tests).

export interface Progress {
  /** what is happening, e.g. `download linux-image-6.1.0-56-amd64-dbg` */
  step: string;
  done: number;
  /** 0 when unknown */
  total: number;
}

export type ProgressFn = (p: Progress) => void;
export type LogFn = (line: string) => void;

function mib(n: number): string {
  return (n / 1048576).toFixed(1);
}

/**
 * Returns a reporter for one step. It calls `onProgress` on every update and, when `toStderr`,
 * draws a bar (TTY) or prints a line at most every `intervalMs` (not a TTY).
 */
export function progressReporter(
  step: string,
  opts: { onProgress?: ProgressFn; toStderr?: boolean; intervalMs?: number } = {},
): { update(done: number, total: number): void; finish(summary?: string): void } {
  const tty = Boolean(process.stderr.isTTY);
  const interval = opts.intervalMs ?? (tty ? 100 : 5000);
  let last = 0;
  let drew = false;
  let lastDone = 0;
  let lastTotal = 0;
  const draw = (done: number, total: number): void => {
    if (!opts.toStderr) return;
    if (tty) {
      const width = 30;
      const frac = total > 0 ? Math.min(1, done / total) : 0;
      const fill = Math.round(frac * width);
      const bar = '#'.repeat(fill) + '-'.repeat(width - fill);
      const pct = total > 0 ? `${(frac * 100).toFixed(1).padStart(5)}%` : '';
      process.stderr.write(`\r${step} [${bar}] ${pct} ${mib(done)}/${total > 0 ? mib(total) : '?'} MiB\x1b[K`);
      drew = true;
    } else {
      const pct = total > 0 ? ` (${((done / total) * 100).toFixed(1)}%)` : '';
      process.stderr.write(`${step}: ${mib(done)}/${total > 0 ? mib(total) : '?'} MiB${pct}\n`);
    }
  };
  return {
    update(done, total) {
      lastDone = done;
      lastTotal = total;
      opts.onProgress?.({ step, done, total });
      const now = Date.now();
      if (now - last >= interval) {
        last = now;
        draw(done, total);
      }
    },
    finish(summary) {
      opts.onProgress?.({ step, done: lastDone, total: lastTotal });
      if (!opts.toStderr) return;
      if (tty && drew) process.stderr.write('\r\x1b[K');
      if (summary) process.stderr.write(`${step}: ${summary}\n`);
    },
  };
}
