// `ciel monitor`: sample the containers of a running VM from outside.
import type { Command } from 'commander';
import { CielError } from '../runtime/errors.ts';
import { parseInterval, runQemuLoop } from '../runtime/monitor-loop.ts';
import type { Sample } from '../runtime/sample.ts';

interface MonitorCliOptions {
  qemu?: string;
  memory?: string;
  kernel?: string;
  interval: string;
  count?: string;
  consistent?: boolean;
  json?: boolean;
  vm?: string;
}

export function registerMonitor(program: Command): void {
  program
    .command('monitor')
    .description(
      "Read per-container CPU, memory, disk and network usage of a running VM from outside (no agent in the guest). " +
        'Needs a build for the guest kernel (`ciel build --kernel RELEASE`).',
    )
    .option('--qemu <socket>', 'QMP unix socket of the QEMU process (registers, pause/resume)')
    .option('--memory <file>', "the guest's RAM file (QEMU -object memory-backend-file,share=on,mem-path=FILE)")
    .option('-k, --kernel <release>', 'guest kernel release the monitor was built for, e.g. 6.1.0-56-amd64')
    .option('-i, --interval <time>', 'time between samples: 1s, 250ms, ...', '1s')
    .option('-n, --count <n>', 'stop after N samples')
    .option('--consistent', 'pause the vCPUs around each sample (QMP stop/cont) and report the pause time')
    .option('--json', 'one JSON line per sample on stdout')
    .option('--vm <name>', 'VM name to put in samples')
    .action(async (o: MonitorCliOptions) => {
      if (!o.qemu || !o.memory || !o.kernel) throw new CielError('monitor needs --qemu SOCKET --memory FILE --kernel RELEASE');
      const count = o.count === undefined ? undefined : Number(o.count);
      if (count !== undefined && !(Number.isInteger(count) && count > 0)) throw new CielError(`--count must be a positive integer, not '${o.count}'`);
      const ac = new AbortController();
      process.once('SIGINT', () => ac.abort());
      process.once('SIGTERM', () => ac.abort());
      let errors = 0;
      await runQemuLoop(
        { qmpSocket: o.qemu, memFile: o.memory, release: o.kernel, vm: o.vm },
        {
          intervalMs: parseInterval(o.interval),
          count,
          consistent: o.consistent,
          signal: ac.signal,
          onSample: (s) => process.stdout.write(o.json ? JSON.stringify(s) + '\n' : formatLines(s)),
          onError: (e) => {
            errors++;
            process.stderr.write(`ciel monitor: sample failed: ${e.message}\n`);
          },
        },
      );
      if (errors > 0 && count !== undefined) process.exitCode = 3;
    });
}

function formatLines(s: Sample): string {
  const head = `${s.time} ${s.kernel} ${s.containers.length} containers in ${s.sample_us} us${s.pause_us !== undefined ? ` (paused ${s.pause_us} us)` : ''}\n`;
  return (
    head +
    s.containers
      .map(
        (c) =>
          `  ${c.id.slice(0, 12)} cpu ${(c.cpu_usage_ns / 1e9).toFixed(3)}s mem ${c.memory_usage_bytes} io r/w ${c.io_read_bytes}/${c.io_write_bytes} net rx/tx ${c.net_rx_bytes}/${c.net_tx_bytes} pids ${c.pids}\n`,
      )
      .join('')
  );
}
