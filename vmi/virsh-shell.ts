// One long-lived interactive `virsh -c URI` fed commands on stdin, so a command costs a libvirt round trip
// (~1-5 ms) instead of starting virsh (~40 ms, ~200 ms under load): what keeps a `--consistent` pause of
// a libvirt domain short. Each command is followed by `echo @@E<n>`; its output is what virsh prints
// (stderr merged into stdout, so an `error:` line comes in order) until that marker, less the echoed
// `virsh # ...` prompt lines. virsh exits when our end of its stdin closes: nothing outlives this process.
import { spawn, type ChildProcess } from 'node:child_process';

/** virsh's own tokenizer takes single-quoted words; a word with a quote or newline is not sent this way. */
export const shellSafe = (word: string): boolean => !/['\n\r]/.test(word);

/** The shell did not answer in time (unlike a shell that died, the command may have run). */
export class TimeoutError extends Error {}

interface Pending {
  marker: string;
  resolve: (r: { ok: boolean; out: string }) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class VirshShell {
  private child: ChildProcess | null = null;
  private buf = '';
  private n = 0;
  private pending: Pending | null = null;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly uri: string) {}

  /** Run one virsh command (words, each shellSafe); ok is false when virsh printed `error:`. */
  run(words: string[], timeoutMs: number): Promise<{ ok: boolean; out: string }> {
    const p = this.queue.then(() => this.runNow(words, timeoutMs));
    this.queue = p.catch(() => {});
    return p;
  }

  private start(): ChildProcess {
    if (this.child && this.child.exitCode === null && this.child.stdin?.writable) return this.child;
    const c = spawn('sh', ['-c', 'exec virsh -q -c "$1" 2>&1', 'sh', this.uri], { stdio: ['pipe', 'pipe', 'ignore'] });
    // only the current shell's end fails the pending command (an old one may exit after a timeout)
    c.on('error', (e) => this.child === c && this.fail(e));
    c.on('exit', () => this.child === c && this.fail(new Error('virsh exited')));
    c.stdin!.on('error', () => {});
    c.stdout!.setEncoding('utf8').on('data', (d: string) => this.onData(d));
    // never keeps this process alive; our exit ends its stdin and so virsh
    c.unref();
    (c.stdin as unknown as { unref?: () => void }).unref?.();
    (c.stdout as unknown as { unref?: () => void }).unref?.();
    this.buf = '';
    this.child = c;
    return c;
  }

  private runNow(words: string[], timeoutMs: number): Promise<{ ok: boolean; out: string }> {
    const c = this.start();
    const marker = `@@E${process.pid}.${++this.n}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        // a shell that did not answer is not trusted again: the next command starts a new one
        this.fail(new TimeoutError(`no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending = { marker, resolve, reject, timer };
      c.stdin!.write(`${words.map((w) => `'${w}'`).join(' ')}\necho ${marker}\n`);
    });
  }

  private onData(d: string): void {
    this.buf += d;
    const p = this.pending;
    if (!p) return;
    // the marker as echo's output: at a line start, not the echoed command `virsh # echo @@E..`
    const m = new RegExp(`(?:^|\\n)${p.marker.replace(/\./g, '\\.')}(?=virsh # |\\n|$)`).exec(this.buf);
    if (!m) return;
    const chunk = this.buf.slice(0, m.index);
    this.buf = this.buf.slice(m.index + m[0].length);
    this.pending = null;
    clearTimeout(p.timer);
    const lines = chunk.split('\n').filter((l) => !l.startsWith('virsh # ') && l !== 'virsh #');
    const out = lines.join('\n').trim();
    const err = lines.filter((l) => l.startsWith('error: ')).map((l) => l.slice(7));
    p.resolve(err.length ? { ok: false, out: err.join('; ') } : { ok: true, out });
  }

  private fail(e: Error): void {
    const c = this.child;
    this.child = null;
    c?.stdin?.end();
    if (c && c.exitCode === null) c.kill(); // our own child, by its pid: virsh may be stuck in a call
    const p = this.pending;
    this.pending = null;
    if (p) {
      clearTimeout(p.timer);
      p.reject(e);
    }
  }

  close(): void {
    this.fail(new Error('closed'));
  }
}
