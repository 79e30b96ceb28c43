// Ground truth from inside the test guest: the framed JSON the guest prints on its second serial port
// (see truth.awk), parsed into raw per-mode fields plus normalized, cAdvisor-like numbers.
import { connect, type Socket } from 'node:net';

export const TRUTH_BEGIN = 'CIEL-TRUTH-BEGIN ';
export const TRUTH_END = ' CIEL-TRUTH-END';

export interface TruthContainer {
  name: string;
  id: string;
  cgroup: string;
  /** the container's main pid in the guest */
  pid: number;
  /** raw cgroupfs/procfs fields; cgroup2: cpu_usage_usec, memory_current, memory_anon, memory_file,
   *  memory_inactive_file, io_rbytes, io_wbytes, pids_current; cgroup1: cpuacct_usage, memory_usage_in_bytes,
   *  memory_rss, memory_cache, memory_total_inactive_file, blkio_read_bytes, blkio_write_bytes, pids_current; both: net_{rx,tx}_{bytes,packets} (eth0 in the netns) */
  raw: Record<string, number | null>;
  /** normalized (same meaning in both modes; null when the guest file was missing) */
  cpu_usage_ns: number | null;
  memory_usage_bytes: number | null;
  /** v2 memory.stat anon / v1 memory.stat rss */
  memory_rss_bytes: number | null;
  /** v2 memory.stat file / v1 memory.stat cache */
  memory_cache_bytes: number | null;
  /** v2 memory.stat inactive_file / v1 memory.stat total_inactive_file (hierarchical in both) */
  memory_inactive_file_bytes: number | null;
  io_read_bytes: number | null;
  io_write_bytes: number | null;
  pids: number | null;
  net_rx_bytes: number | null;
  net_rx_packets: number | null;
  net_tx_bytes: number | null;
  net_tx_packets: number | null;
}

export interface Truth {
  /** request sequence number echoed by the guest */
  seq: number;
  mode: 'cgroup2' | 'cgroup1';
  /** guest CLOCK_MONOTONIC (ns) when the guest started / finished reading */
  tStartNs: bigint;
  tEndNs: bigint;
  containers: TruthContainer[];
  /** host wall-clock ms (Date.now()) when the request was sent / the answer fully arrived */
  hostSentMs: number;
  hostReceivedMs: number;
}

const n = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/** Parse one framed line (the frame may be surrounded by other text). Throws on malformed input. */
export function parseTruthLine(line: string, hostSentMs = 0, hostReceivedMs = 0): Truth {
  const b = line.indexOf(TRUTH_BEGIN);
  const e = line.indexOf(TRUTH_END, b + TRUTH_BEGIN.length);
  if (b < 0 || e < 0) throw new Error(`not a truth frame: ${line.slice(0, 120)}`);
  const json = line.slice(b + TRUTH_BEGIN.length, e);
  // keep the big monotonic timestamps exact: quote them before JSON.parse
  const j = JSON.parse(json.replace(/"(t_start_ns|t_end_ns)":(\d+)/g, '"$1":"$2"')) as {
    seq: number;
    mode: string;
    t_start_ns: string;
    t_end_ns: string;
    containers: Record<string, unknown>[];
  };
  if (j.mode !== 'cgroup2' && j.mode !== 'cgroup1') throw new Error(`truth: unknown mode ${j.mode}`);
  const v2 = j.mode === 'cgroup2';
  const containers = j.containers.map((c): TruthContainer => {
    const raw: Record<string, number | null> = {};
    for (const [k, v] of Object.entries(c)) if (!['name', 'id', 'cgroup', 'pid'].includes(k)) raw[k] = n(v);
    const usec = raw.cpu_usage_usec;
    return {
      name: String(c.name),
      id: String(c.id),
      cgroup: String(c.cgroup),
      pid: Number(c.pid),
      raw,
      cpu_usage_ns: v2 ? (usec == null ? null : usec * 1000) : (raw.cpuacct_usage ?? null),
      memory_usage_bytes: v2 ? (raw.memory_current ?? null) : (raw.memory_usage_in_bytes ?? null),
      memory_rss_bytes: v2 ? (raw.memory_anon ?? null) : (raw.memory_rss ?? null),
      memory_cache_bytes: v2 ? (raw.memory_file ?? null) : (raw.memory_cache ?? null),
      memory_inactive_file_bytes: v2 ? (raw.memory_inactive_file ?? null) : (raw.memory_total_inactive_file ?? null),
      io_read_bytes: v2 ? (raw.io_rbytes ?? null) : (raw.blkio_read_bytes ?? null),
      io_write_bytes: v2 ? (raw.io_wbytes ?? null) : (raw.blkio_write_bytes ?? null),
      pids: raw.pids_current ?? null,
      net_rx_bytes: raw.net_rx_bytes ?? null,
      net_rx_packets: raw.net_rx_packets ?? null,
      net_tx_bytes: raw.net_tx_bytes ?? null,
      net_tx_packets: raw.net_tx_packets ?? null,
    };
  });
  return {
    seq: j.seq,
    mode: j.mode,
    tStartNs: BigInt(j.t_start_ns),
    tEndNs: BigInt(j.t_end_ns),
    containers,
    hostSentMs,
    hostReceivedMs,
  };
}

/**
 * Request/response client for the guest's truth channel (QEMU `-serial` chardev unix socket -> guest ttyS1).
 * Requests are serialized; each carries a sequence number the answer must echo.
 */
export class TruthChannel {
  private sock: Socket | null = null;
  private buf = '';
  private seq = 0;
  private queue: Promise<unknown> = Promise.resolve();
  private waiter: ((line: string) => void) | null = null;
  private closedErr: Error | null = null;

  private constructor(private readonly path: string) {}

  static async connect(path: string, timeoutMs = 5000): Promise<TruthChannel> {
    const ch = new TruthChannel(path);
    await ch.open(timeoutMs);
    return ch;
  }

  private open(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const s = connect(this.path);
      const t = setTimeout(() => {
        s.destroy();
        reject(new Error(`truth channel ${this.path}: connect timed out`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(t);
        this.sock = s;
        resolve();
      });
      s.once('error', (err) => {
        clearTimeout(t);
        this.closedErr = new Error(`truth channel ${this.path}: ${err.message}`);
        reject(this.closedErr);
      });
      s.on('close', () => {
        this.closedErr ??= new Error(`truth channel ${this.path}: closed (guest gone?)`);
        this.sock = null;
      });
      s.setEncoding('latin1');
      s.on('data', (d: string) => {
        this.buf += d;
        let i;
        while ((i = this.buf.indexOf('\n')) >= 0) {
          const line = this.buf.slice(0, i).replace(/\r$/, '');
          this.buf = this.buf.slice(i + 1);
          this.waiter?.(line);
        }
      });
    });
  }

  /** Send `cmd <seq>` and resolve with the first line accepted by `accept`. */
  private request(
    cmd: string,
    accept: (line: string, seq: number) => boolean,
    timeoutMs: number,
    extra = '',
  ): Promise<{ line: string; sentMs: number }> {
    const run = () =>
      new Promise<{ line: string; sentMs: number }>((resolve, reject) => {
        if (!this.sock || this.closedErr) return reject(this.closedErr ?? new Error('truth channel closed'));
        const seq = ++this.seq;
        const t = setTimeout(() => {
          this.waiter = null;
          reject(new Error(`truth channel: no answer to "${cmd} ${seq}" within ${timeoutMs} ms`));
        }, timeoutMs);
        this.waiter = (line) => {
          if (!accept(line, seq)) return;
          clearTimeout(t);
          this.waiter = null;
          resolve({ line, sentMs });
        };
        const sentMs = Date.now();
        this.sock.write(`${cmd} ${seq}${extra ? ` ${extra}` : ''}\n`);
      });
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  async ping(timeoutMs = 10_000): Promise<void> {
    await this.request('ping', (l, s) => l.trim() === `CIEL-PONG ${s}`, timeoutMs);
  }

  /** One ground-truth reading. hostSentMs/hostReceivedMs bracket it in host time. */
  async truth(timeoutMs = 15_000): Promise<Truth> {
    const { line, sentMs } = await this.request(
      'truth',
      (l, s) => l.includes(TRUTH_BEGIN) && l.includes(TRUTH_END) && l.includes(`{"seq":${s},`),
      timeoutMs,
    );
    return parseTruthLine(line, sentMs, Date.now());
  }

  /** Run a shell command in the guest (as root, outside the containers); returns its output and status. */
  async sh(command: string, timeoutMs = 30_000): Promise<{ output: string; status: number }> {
    if (/[\r\n]/.test(command)) throw new Error('truth channel sh: command must be one line');
    const lines: string[] = [];
    let status = -1;
    await this.request(
      'sh',
      (l, s) => {
        const m = l.match(/^CIEL-SH-END (\d+) (\d+)$/);
        if (m && Number(m[1]) === s) {
          status = Number(m[2]);
          return true;
        }
        lines.push(l);
        return false;
      },
      timeoutMs,
      command,
    );
    return { output: lines.join('\n'), status };
  }

  close(): void {
    this.sock?.destroy();
    this.sock = null;
  }
}
