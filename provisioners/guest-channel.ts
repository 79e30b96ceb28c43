// Host side of the guest's control channel: a second UART (ttyS1) backed by a unix socket, where the
// test guest, the minimal VMs and the LB VM run `/sbin/ciel-ctl` (testbed/minimal-guest.ts).
// Both provisioners use it: the QEMU-direct one passes `-chardev socket`, the libvirt one a
// `<serial type='unix'>`.

import { connect, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { ToolError } from '../common/errors.ts';
import { abortableSleep as sleep } from '../common/sleep.ts';

export interface ExecResult {
  out: string;
  rc: number;
}

/**
 * Host side of the guest's control loop on its second UART (guest.ts CTL_SCRIPT): sends
 * `<id> <base64 script>` lines, reads `@@B <id>`, the output, `@@E <id> <rc>`. Commands run one at a
 * time. The UART drops what arrives before the guest's loop opens it: waitReady() pings until it answers.
 */
export class GuestChannel {
  private buf = '';
  private gone: string | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private waiters = new Set<() => void>();

  private constructor(private readonly sock: Socket, readonly path: string) {
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      this.buf = (this.buf + d).slice(-1024 * 1024);
      for (const w of [...this.waiters]) w();
    });
    const fail = (why: string) => {
      if (this.gone) return;
      this.gone = why;
      for (const w of [...this.waiters]) w();
    };
    sock.on('error', (e) => fail(e.message));
    sock.on('close', () => fail('channel closed'));
  }

  static async connect(path: string, timeoutMs = 10_000): Promise<GuestChannel> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      try {
        const sock = await new Promise<Socket>((res, rej) => {
          const s = connect(path);
          s.once('connect', () => res(s));
          s.once('error', rej);
        });
        return new GuestChannel(sock, path);
      } catch (err) {
        if (performance.now() > deadline) throw new ToolError('qemu', `control channel ${path}: ${(err as Error).message}`);
        await sleep(20);
      }
    }
  }

  /** Connect and wait until the guest's loop answers (a channel ready for exec). */
  static async open(path: string, timeoutMs = 30_000): Promise<GuestChannel> {
    const ch = await GuestChannel.connect(path, timeoutMs);
    try {
      await ch.waitReady(timeoutMs);
    } catch (err) {
      ch.close();
      throw err;
    }
    return ch;
  }

  /**
   * The VM's channel kept in `holder`: the open one, else a new one on `holder.ctlPath` (kept for the
   * next call). The provisioners keep one per running VM this way.
   */
  static async reuseOrOpen(holder: { channel?: GuestChannel; ctlPath: string }, timeoutMs = 30_000): Promise<GuestChannel> {
    if (holder.channel && !holder.channel.closed) return holder.channel;
    holder.channel = await GuestChannel.open(holder.ctlPath, timeoutMs);
    return holder.channel;
  }

  get closed(): boolean {
    return this.gone !== null;
  }

  close(): void {
    this.gone ??= 'closed';
    this.sock.destroy();
  }

  /** Wait for `re` in the buffer; returns the match (the buffer is consumed up to its end). */
  private waitFor(re: RegExp, timeoutMs: number): Promise<RegExpExecArray | null> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const m = re.exec(this.buf);
        if (m) {
          done();
          this.buf = this.buf.slice(m.index + m[0].length);
          resolve(m);
        } else if (this.gone) {
          done();
          reject(new ToolError('qemu', `control channel ${this.path}: ${this.gone}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        resolve(null);
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  private send(id: string, script: string): void {
    this.sock.write(`${id} ${Buffer.from(script).toString('base64')}\n`);
  }

  /** Ping (`true`) every `everyMs` until the guest's loop answers. */
  async waitReady(timeoutMs = 30_000, everyMs = 500): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const id = randomBytes(6).toString('hex');
      this.send(id, 'true');
      if (await this.waitFor(new RegExp(`@@E ${id} \\d+\\n`), everyMs)) return;
      if (performance.now() > deadline) throw new ToolError('qemu', `control channel ${this.path}: the guest did not answer within ${timeoutMs} ms`);
    }
  }

  /** Run a shell script in the guest; output (stdout+stderr) and exit code. */
  exec(script: string, timeoutMs = 30_000): Promise<ExecResult> {
    const run = async (): Promise<ExecResult> => {
      const id = randomBytes(6).toString('hex');
      this.send(id, script);
      const m = await this.waitFor(new RegExp(`@@B ${id}\\n([\\s\\S]*?)@@E ${id} (\\d+)\\n`), timeoutMs);
      if (!m) throw new ToolError('qemu', `control channel ${this.path}: no answer within ${timeoutMs} ms to ${JSON.stringify(script.slice(0, 80))}`);
      return { out: m[1]!, rc: Number(m[2]) };
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => {});
    return p;
  }
}
