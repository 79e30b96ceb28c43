// The host side of the open-loop load generator: starts open-loop-client.ts inside the client network
// namespace (the L2 segment's), changes its rate, and keeps every request's outcome and latency.
import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { ToolError } from '../../common/errors.ts';

export interface RequestResult {
  i: number;
  /** epoch ms the request was sent */
  sent: number;
  /** ms from sending to the end of the answer (or the failure) */
  lat: number;
  ok: boolean;
  status: number;
  err?: string;
}

export interface OpenLoopOptions {
  /** network namespace the client runs in */
  ns: string;
  host: string;
  port?: number;
  /** CGI iterations per request (the CPU each request costs in the container) */
  work: number;
  /** a request not answered within this long is a failure; default 30 000 ms */
  timeoutMs?: number;
  onResult?: (r: RequestResult) => void;
}

const CLIENT = fileURLToPath(new URL('./open-loop-client.ts', import.meta.url));

export class OpenLoopLoad {
  readonly results: RequestResult[] = [];
  /** every rate change: epoch ms and requests per second */
  readonly rates: { at: number; rate: number }[] = [];
  private child?: ChildProcess;
  private exited?: Promise<void>;
  private stderr = '';

  constructor(private readonly o: OpenLoopOptions) {}

  /** Start the client process (no requests until setRate). */
  async start(): Promise<void> {
    const tsx = createRequire(import.meta.url).resolve('tsx');
    const args = JSON.stringify({ host: this.o.host, port: this.o.port ?? 80, work: this.o.work, timeoutMs: this.o.timeoutMs ?? 30_000 });
    const child = spawn('ip', ['netns', 'exec', this.o.ns, process.execPath, '--import', tsx, CLIENT, args], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child = child;
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr = (this.stderr + d).slice(-4000)));
    this.exited = new Promise((resolve) => child.on('exit', () => resolve()));
    const ready = new Promise<void>((resolve, reject) => {
      child.on('exit', (code) => reject(new ToolError('open-loop client', `exited (code ${code}) before it was ready: ${this.stderr.trim()}`)));
      createInterface({ input: child.stdout! }).on('line', (line) => {
        let m: Partial<RequestResult> & { ready?: boolean };
        try {
          m = JSON.parse(line) as typeof m;
        } catch {
          return;
        }
        if (m.ready) return resolve();
        const r = m as RequestResult;
        this.results.push(r);
        this.o.onResult?.(r);
      });
    });
    await ready;
  }

  /** Requests per second from now on (0: none). */
  setRate(rate: number): void {
    if (!this.child?.stdin?.writable) throw new ToolError('open-loop client', `not running${this.stderr ? `: ${this.stderr.trim()}` : ''}`);
    this.rates.push({ at: Date.now(), rate });
    this.child.stdin.write(`${JSON.stringify({ rate })}\n`);
  }

  get rate(): number {
    return this.rates.at(-1)?.rate ?? 0;
  }

  /** Requests sent in [from, to) (epoch ms). */
  sentIn(from: number, to = Infinity): RequestResult[] {
    return this.results.filter((r) => r.sent >= from && r.sent < to);
  }

  /** Stop sending and wait until every request in flight has ended (at most timeoutMs + 5 s). */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    child.stdin!.write(`${JSON.stringify({ stop: true })}\n`);
    const t = setTimeout(() => child.kill('SIGKILL'), (this.o.timeoutMs ?? 30_000) + 5_000);
    await this.exited;
    clearTimeout(t);
  }
}

/** The q-quantile (0..1) of latencies, nearest rank; undefined for none. */
export function quantile(values: number[], q: number): number | undefined {
  if (!values.length) return undefined;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}
