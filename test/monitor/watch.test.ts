import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { watch } from '../../monitor/watch.ts';

const ID = 'a'.repeat(64);
const line = (t: string, cpu: number, vm = 'web') =>
  JSON.stringify({
    time: t,
    kernel: '6.1.0-56-amd64',
    sample_us: 300,
    vm,
    containers: [
      { id: ID, cgroup: `/docker/${ID}`, name: '/nginx', cpu_usage_ns: cpu, memory_usage_bytes: 50 << 20, memory_rss_bytes: 0, memory_cache_bytes: 0, io_read_bytes: 0, io_write_bytes: 0, net_rx_bytes: 0, net_tx_bytes: 0, pids: 3 },
    ],
  });

class Sink extends PassThrough {
  text = '';
  constructor() {
    super();
    this.on('data', (d: Buffer) => (this.text += d.toString()));
  }
}

const have = (t: string) => {
  try {
    execFileSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};

describe('watch (stdin JSON lines -> live table)', () => {
  it('renders plain tables when not a TTY and skips bad lines with a message', async () => {
    const input = new PassThrough();
    const output = new Sink();
    const errors = new Sink();
    const done = watch({ input, output, errors });
    input.end(
      [line('2026-11-22T08:00:00Z', 0), 'garbage', '{"x":1}', line('2026-11-22T08:00:00.8Z', 600_000_000), line('2026-11-22T08:00:01Z', 7, 'db'), ''].join('\n'),
    );
    await done;
    expect(errors.text).toBe('line 2: not JSON, skipped\nline 3: not a sample (needs "time" and "containers"), skipped\n');
    expect(output.text).not.toContain('\x1b');
    const rows = output.text.split('\n').filter((l) => l.startsWith('nginx'));
    expect(rows).toEqual([
      'nginx          -  50.0 MiB          -           -       -       -',
      'nginx      75.0%  50.0 MiB      0 B/s       0 B/s   0 B/s   0 B/s',
      'nginx          -  50.0 MiB          -           -       -       -',
    ]);
  });

  it.skipIf(!have('tmux'))('redraws in place in a real terminal (tmux)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ciel-tmux-'));
    const feed = join(dir, 'feed.mjs');
    writeFileSync(
      feed,
      `const lines = ${JSON.stringify([line('2026-11-22T08:00:00Z', 0), line('2026-11-22T08:00:01Z', 250_000_000), line('2026-11-22T08:00:03Z', 1_250_000_000)])};
for (const l of lines) { process.stdout.write(l + '\\n'); await new Promise(r => setTimeout(r, 300)); }
await new Promise(r => setTimeout(r, 60000));\n`,
    );
    const session = `ciel-view-test-${process.pid}`;
    const root = resolve(import.meta.dirname, '../..');
    const cmd = `cd ${root} && node ${feed} | node --import tsx monitor/watch.ts`;
    execFileSync('tmux', ['new-session', '-d', '-s', session, '-x', '100', '-y', '30', cmd]);
    try {
      let screen = '';
      const until = Date.now() + 30_000;
      while (Date.now() < until) {
        screen = execFileSync('tmux', ['capture-pane', '-p', '-t', session], { encoding: 'utf8' });
        if (screen.includes('50.0%')) break;
        execFileSync('sleep', ['0.2']);
      }
      const lines = screen.split('\n').filter((l) => l.trim());
      // three updates, one table on screen: drawn in place, not scrolled
      expect(lines.filter((l) => l.startsWith('VM web'))).toHaveLength(1);
      expect(lines[0]).toBe('VM web  2026-11-22T08:00:03Z  1 container(s)  over 2.000 s');
      expect(lines[1]).toMatch(/^CONTAINER\s+CPU %\s+MEM\s+DISK READ\s+DISK WRITE\s+NET RX\s+NET TX$/);
      expect(lines[2]).toMatch(/^nginx\s+50\.0%\s+50\.0 MiB/);
    } finally {
      execFileSync('tmux', ['kill-session', '-t', session]);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
