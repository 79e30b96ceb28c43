// QMP through libvirt's monitor passthrough, for a domain whose QMP socket libvirt holds (QMP serves one
// client at a time): each command is `virsh -c URI qemu-monitor-command DOMAIN '<json>'` (`--hmp` for
// human monitor commands), sent down one interactive virsh (virsh-shell.ts; a virsh of its own when a
// word cannot be quoted for it or the shell died), behind the same QmpTransport as the socket client, so the QEMU-live backend,
// the session, pause/resume and re-attach work unchanged.
//
// Events: passthrough answers commands only. QEMU's events are still seen through libvirt's own event
// stream, `virsh qemu-monitor-event --domain DOMAIN --loop`, run for as long as the transport is open
// (under `sh`, which kills it when our end of its stdin closes: this process exiting, even by SIGKILL,
// leaves no virsh behind). RESET and SHUTDOWN then mark the backend as they do over a socket. Two
// things do not depend on that stream: QEMU exiting is seen from its pid (`closed` compares the pid's
// start time, no round trip; a domain restarted later is a new process), and a reset the stream missed
// (it starts a moment after attach, or libvirtd restarted) shows up as guest faults, after which the
// session re-reads CR3 and the KASLR slide (VmSession.recover).
import { spawn, type ChildProcess } from 'node:child_process';
import { execa } from 'execa';
import { QmpError, QmpTransport, type QmpEvent } from './qmp.ts';
import type { ResumeVia } from './pause-guardian.ts';
import { processStartTime } from './libvirt-domain.ts';
import { shellSafe, TimeoutError, VirshShell } from './virsh-shell.ts';

export interface LibvirtQmpOptions {
  uri: string;
  domain: string;
  /** the domain's QEMU process, and its start time (libvirt-domain.ts locateDomainRam) */
  pid: number;
  startTime: string;
}

const EVENT_LINE = /event (\S+) (?:at \S+ )?for domain '.*?': (.*)$/;

/** One line of `virsh qemu-monitor-event` as a QmpEvent (null when it is not an event line). */
export function parseEventLine(line: string): QmpEvent | null {
  const m = EVENT_LINE.exec(line);
  if (!m) return null;
  let data: unknown;
  try {
    data = m[2] === '<null>' ? undefined : JSON.parse(m[2]!);
  } catch {
    data = m[2];
  }
  return data === undefined ? { event: m[1]! } : { event: m[1]!, data };
}

export class LibvirtQmp extends QmpTransport {
  readonly socketPath: string;
  readonly resumeVia: ResumeVia;
  private gone: string | null = null;
  private events: ChildProcess | null = null;
  /** commands go down one interactive virsh (a process per command costs ~40-200 ms) */
  private readonly shell: VirshShell;

  private constructor(private readonly o: LibvirtQmpOptions) {
    super();
    this.socketPath = `libvirt domain ${o.domain} (${o.uri})`;
    this.resumeVia = { libvirt: { uri: o.uri, domain: o.domain } };
    this.shell = new VirshShell(o.uri);
  }

  /** A transport to a running domain: the event stream started, and one `query-status` answered. */
  static async connect(o: LibvirtQmpOptions, timeoutMs = 10_000): Promise<LibvirtQmp> {
    const c = new LibvirtQmp(o);
    c.watchEvents();
    try {
      await c.execute('query-status', undefined, timeoutMs);
    } catch (e) {
      c.close();
      throw e;
    }
    return c;
  }

  private watchEvents(): void {
    const script = 'virsh -c "$1" qemu-monitor-event --domain "$2" --loop & v=$!; read _ignored; kill $v 2>/dev/null';
    const child = spawn('sh', ['-c', script, 'sh', this.o.uri, this.o.domain], { stdio: ['pipe', 'pipe', 'ignore'] });
    child.on('error', () => {}); // no sh: no events, the pid and fault checks remain
    child.stdin!.on('error', () => {});
    let buf = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      for (let i; (i = buf.indexOf('\n')) >= 0; ) {
        const e = parseEventLine(buf.slice(0, i));
        buf = buf.slice(i + 1);
        if (e) this.emit('event', e);
      }
    });
    // it must never keep this process alive: our exit closes its stdin, which ends it
    child.unref();
    (child.stdin as unknown as { unref?: () => void }).unref?.();
    (child.stdout as unknown as { unref?: () => void }).unref?.();
    this.events = child;
  }

  /** true once QEMU's process is gone (checked against its pid and start time: cheap) or close() was called */
  get closed(): boolean {
    if (!this.gone && processStartTime(this.o.pid) !== this.o.startTime) this.fail(`QEMU (pid ${this.o.pid}) exited`);
    return this.gone !== null;
  }

  async execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = 5000): Promise<T> {
    const json = JSON.stringify(args ? { execute: command, arguments: args } : { execute: command });
    const out = await this.virsh(command, [json], timeoutMs);
    let msg: { return?: unknown; error?: { class?: string; desc?: string } };
    try {
      msg = JSON.parse(out) as typeof msg;
    } catch {
      throw new QmpError(this.socketPath, command, `not a QMP answer: ${out.slice(0, 200)}`);
    }
    if (msg.error) throw new QmpError(this.socketPath, command, msg.error.desc ?? 'error', msg.error.class);
    return msg.return as T;
  }

  /** HMP through `--hmp` (libvirt wraps it in human-monitor-command itself). */
  override hmp(commandLine: string, timeoutMs = 5000): Promise<string> {
    return this.virsh(commandLine, ['--hmp', commandLine], timeoutMs);
  }

  private async virsh(what: string, tail: string[], timeoutMs: number): Promise<string> {
    if (this.closed) throw new QmpError(this.socketPath, what, this.gone!);
    const words = ['qemu-monitor-command', this.o.domain, ...tail];
    if (words.every(shellSafe)) {
      try {
        const r = await this.shell.run(words, timeoutMs);
        if (r.ok) return r.out;
        if (this.closed) throw new QmpError(this.socketPath, what, this.gone!);
        throw new QmpError(this.socketPath, what, `virsh: ${r.out}`);
      } catch (e) {
        if (e instanceof QmpError) throw e;
        if (this.closed) throw new QmpError(this.socketPath, what, this.gone!);
        if (e instanceof TimeoutError) throw new QmpError(this.socketPath, what, e.message);
        // the shell died before answering: one virsh of its own (what Ciel sends, query-status, stop,
        // cont, info registers, is harmless to repeat)
      }
    }
    const r = await execa('virsh', ['-c', this.o.uri, 'qemu-monitor-command', this.o.domain, ...tail], { reject: false, timeout: timeoutMs });
    if (!r.failed) return r.stdout;
    // the domain stopping under a command is QEMU gone, as a closed socket is
    if (this.closed) throw new QmpError(this.socketPath, what, this.gone!);
    throw new QmpError(this.socketPath, what, r.timedOut ? `no answer within ${timeoutMs} ms` : `virsh: ${r.stderr.trim().replace(/^error: /gm, '') || r.message}`);
  }

  private fail(why: string): void {
    if (this.gone) return;
    this.gone = why;
    this.stopEvents();
    this.shell.close();
    this.emit('close', why);
  }

  private stopEvents(): void {
    const c = this.events;
    this.events = null;
    c?.stdin?.end(); // sh then kills its virsh by pid
  }

  close(): void {
    this.fail('closed by client');
  }
}
