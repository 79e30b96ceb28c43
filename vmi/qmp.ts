// A small QMP (QEMU Machine Protocol) client over a unix socket: greeting, qmp_capabilities, `execute` with
// id matching and timeouts, events emitted, clear errors when QEMU (the socket) is gone.
// Helpers for what Ciel needs: stop/cont (timed), query-status, and CR3/CR4 of every vCPU through
// `human-monitor-command info registers -a` (QEMU 7.2's QMP has no register command).
import { EventEmitter } from 'node:events';
import { connect, type Socket } from 'node:net';
import { CielError } from '../common/errors.ts';
import type { ResumeVia } from './pause-guardian.ts';

/** QEMU refused a command, the socket is gone, or an answer did not come in time. */
export class QmpError extends CielError {
  constructor(
    readonly socketPath: string,
    readonly command: string,
    detail: string,
    /** QMP error class (GenericError, CommandNotFound, ...) when QEMU answered with an error */
    readonly errorClass?: string,
  ) {
    super(`QMP ${socketPath}: ${command}: ${detail}`);
  }
}

export interface QmpEvent {
  event: string;
  data?: unknown;
  timestamp?: { seconds: number; microseconds: number };
}

export interface VcpuRegisters {
  cpu: number;
  /** page-table root: low 12 bits (PCID) and bit 12 (PTI user copy) masked off */
  cr3: bigint;
  /** CR3 exactly as QEMU printed it */
  cr3Raw: bigint;
  cr4: bigint;
}

export interface RunStatus {
  /** QEMU RunState: running, paused, shutdown, internal-error, guest-panicked, ... */
  status: string;
  running: boolean;
}

/** CR3 bits 13..51: drops flags/PCID (0..11) and bit 12 (with PTI, the user-mode copy is kernel root + 0x1000). */
export const CR3_ROOT_MASK = 0x000f_ffff_ffff_e000n;

/** Parse `info registers -a` text into per-vCPU CR3/CR4. */
export function parseInfoRegisters(text: string): VcpuRegisters[] {
  const out: VcpuRegisters[] = [];
  // QEMU prints "CPU#N" before each vCPU's block when -a is given; a single block has no header.
  const blocks = text.split(/^CPU#(\d+)\s*$/m);
  const handle = (cpu: number, body: string) => {
    const m3 = body.match(/\bCR3=([0-9a-fA-F]+)/);
    const m4 = body.match(/\bCR4=([0-9a-fA-F]+)/);
    if (!m3 || !m4) return;
    const raw = BigInt(`0x${m3[1]}`);
    out.push({ cpu, cr3: raw & CR3_ROOT_MASK, cr3Raw: raw, cr4: BigInt(`0x${m4[1]}`) });
  };
  if (blocks.length === 1) handle(0, blocks[0]);
  else for (let i = 1; i + 1 < blocks.length; i += 2) handle(Number(blocks[i]), blocks[i + 1]);
  return out;
}

/**
 * What Ciel asks of a QEMU monitor, whatever carries it: the QMP socket itself (QmpClient) or libvirt's
 * monitor passthrough (LibvirtQmp, ./libvirt-qmp.ts). A transport implements execute/close/closed and
 * emits 'event' (QmpEvent: RESET, SHUTDOWN, STOP, ...) and 'close' (why: string); the helpers are shared.
 */
export abstract class QmpTransport extends EventEmitter {
  /** names the monitor in messages: the socket path, or the libvirt domain and its URI */
  abstract readonly socketPath: string;
  /** who resumes a paused guest if this process dies inside a pause (vmi/pause-guardian.ts) */
  abstract readonly resumeVia: ResumeVia;
  /** true once QEMU is gone (or close() was called) */
  abstract readonly closed: boolean;
  abstract execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<T>;
  abstract close(): void;

  /** Run a human monitor command and return its text output. */
  hmp(commandLine: string, timeoutMs = 5000): Promise<string> {
    return this.execute<string>('human-monitor-command', { 'command-line': commandLine }, timeoutMs);
  }

  async queryStatus(): Promise<RunStatus> {
    const r = await this.execute<{ status: string; running: boolean }>('query-status');
    return { status: r.status, running: r.running };
  }

  /** Pause all vCPUs; returns the round-trip time in ms. */
  async stop(): Promise<number> {
    const t = performance.now();
    await this.execute('stop');
    return performance.now() - t;
  }

  /** Resume all vCPUs; returns the round-trip time in ms. */
  async cont(): Promise<number> {
    const t = performance.now();
    await this.execute('cont');
    return performance.now() - t;
  }

  /** CR3/CR4 of every vCPU (QEMU 7.2: `info registers -a` through HMP), with the time taken. */
  async registers(): Promise<{ vcpus: VcpuRegisters[]; ms: number }> {
    const t = performance.now();
    const text = await this.hmp('info registers -a');
    const vcpus = parseInfoRegisters(text);
    if (vcpus.length === 0) throw new QmpError(this.socketPath, 'info registers -a', `no CR3/CR4 in output: ${text.slice(0, 200)}`);
    return { vcpus, ms: performance.now() - t };
  }
}

export class QmpClient extends QmpTransport {
  private sock: Socket | null = null;
  private buf = '';
  private nextId = 1;
  private pending = new Map<string, { resolve: (v: unknown) => void; reject: (e: Error) => void; cmd: string; timer: NodeJS.Timeout }>();
  private gone: string | null = null;
  /** the greeting's version, e.g. { qemu: { major: 7, minor: 2, micro: 0 } } */
  version: unknown = null;

  readonly resumeVia: ResumeVia;

  private constructor(readonly socketPath: string) {
    super();
    this.resumeVia = { qmp: socketPath };
  }

  /** Connect, read the greeting, negotiate capabilities. */
  static async connect(socketPath: string, timeoutMs = 5000): Promise<QmpClient> {
    const c = new QmpClient(socketPath);
    await c.open(timeoutMs);
    await c.execute('qmp_capabilities', undefined, timeoutMs);
    return c;
  }

  private open(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      let greeted = false;
      const s = connect(socketPath(this.socketPath));
      const timer = setTimeout(() => {
        s.destroy();
        reject(
          new QmpError(
            this.socketPath,
            'connect',
            // QEMU accepts a second connection on a QMP socket but greets it only when the first one leaves.
            `no greeting within ${timeoutMs} ms: QMP serves one client at a time, so another client (a provisioner, libvirt, ` +
              `another ciel) probably holds this socket; give QEMU a second -qmp socket for Ciel`,
          ),
        );
      }, timeoutMs);
      s.setEncoding('utf8');
      s.on('error', (err: NodeJS.ErrnoException) => {
        const why =
          err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
            ? `socket not there or nobody listening (${err.code}): is QEMU running?`
            : err.message;
        this.fail(why);
        if (!greeted) {
          clearTimeout(timer);
          reject(new QmpError(this.socketPath, 'connect', why));
        }
      });
      s.on('close', () => this.fail('connection closed (QEMU exited?)'));
      s.on('data', (d: string) => {
        this.buf += d;
        let i;
        while ((i = this.buf.indexOf('\n')) >= 0) {
          const line = this.buf.slice(0, i).trim();
          this.buf = this.buf.slice(i + 1);
          if (!line) continue;
          let msg: Record<string, unknown>;
          try {
            msg = JSON.parse(line) as Record<string, unknown>;
          } catch {
            continue;
          }
          if (!greeted && 'QMP' in msg) {
            greeted = true;
            this.version = (msg.QMP as { version?: unknown }).version ?? null;
            clearTimeout(timer);
            this.sock = s;
            resolve();
            continue;
          }
          this.onMessage(msg);
        }
      });
    });
  }

  private onMessage(msg: Record<string, unknown>): void {
    if (typeof msg.event === 'string') {
      this.emit('event', msg as unknown as QmpEvent);
      return;
    }
    const id = msg.id === undefined ? undefined : String(msg.id);
    const p = id === undefined ? undefined : this.pending.get(id);
    if (!p) return;
    this.pending.delete(id!);
    clearTimeout(p.timer);
    if ('error' in msg) {
      const e = msg.error as { class?: string; desc?: string };
      p.reject(new QmpError(this.socketPath, p.cmd, e.desc ?? 'error', e.class));
    } else p.resolve(msg.return);
  }

  private fail(why: string): void {
    if (this.gone) return;
    this.gone = why;
    this.sock = null;
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new QmpError(this.socketPath, p.cmd, why));
    }
    this.pending.clear();
    this.emit('close', why);
  }

  /** true once the connection is gone (QEMU exited or close() was called) */
  get closed(): boolean {
    return this.gone !== null;
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = 5000): Promise<T> {
    if (this.gone || !this.sock) return Promise.reject(new QmpError(this.socketPath, command, this.gone ?? 'not connected'));
    const id = String(this.nextId++);
    const sock = this.sock;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new QmpError(this.socketPath, command, `no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, cmd: command, timer });
      sock.write(JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id }) + '\n');
    });
  }

  close(): void {
    const s = this.sock;
    this.fail('closed by client');
    s?.destroy();
  }
}

function socketPath(p: string): string {
  return p.startsWith('unix:') ? p.slice(5) : p;
}
