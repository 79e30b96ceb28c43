// libvirtd and virtlogd for the libvirt provisioner: started by hand when they are not running (Debian's
// package does not start them here; see DESIGN.md), and stopped again by exactly the PIDs started.

import { readFileSync } from 'node:fs';
import { execa } from 'execa';
import { ToolError } from '../common/errors.ts';
import { abortableSleep as sleep } from '../common/sleep.ts';

export const DEFAULT_URI = 'qemu:///system';

function processState(pid: number): string | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3);
  } catch {
    return null;
  }
}

/** A live (not zombie) process whose comm is `name`. */
function runningAs(pid: number, name: string): boolean {
  const st = processState(pid);
  if (st === null || st === 'Z' || st === 'X') return false;
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === name;
  } catch {
    return false;
  }
}

/** The PID in a daemon's (or libvirt's per-domain) pid file, or null. */
export function pidFromFile(file: string): number | null {
  try {
    const n = Number(readFileSync(file, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

/**
 * Starts `virtlogd -d` and `libvirtd -d` when they are not running (Debian's package does not start
 * them here; no --listen: the unix socket is enough and --listen needs TLS certificates), and stops
 * exactly what it started, by PID.
 */
export class LibvirtDaemon {
  private constructor(
    readonly uri: string,
    /** PIDs of the daemons this helper started (stop() ends only these) */
    readonly started: { virtlogd?: number; libvirtd?: number },
  ) {}

  static async ensure(opts: { uri?: string; timeoutMs?: number } = {}): Promise<LibvirtDaemon> {
    const uri = opts.uri ?? DEFAULT_URI;
    const started: { virtlogd?: number; libvirtd?: number } = {};
    const running = (name: 'virtlogd' | 'libvirtd') => {
      const pid = pidFromFile(`/run/${name}.pid`);
      return pid !== null && runningAs(pid, name) ? pid : null;
    };
    for (const name of ['virtlogd', 'libvirtd'] as const) {
      if (running(name) !== null) continue;
      try {
        await execa(name, ['-d']);
      } catch (err) {
        throw new ToolError(name, `could not start (${(err as Error).message}); apt-get install -y libvirt-daemon-system libvirt-clients`);
      }
      const deadline = performance.now() + 10_000;
      let pid: number | null = null;
      while ((pid = running(name)) === null) {
        if (performance.now() > deadline) throw new ToolError(name, `started but /run/${name}.pid shows no live ${name}`);
        await sleep(50);
      }
      started[name] = pid;
    }
    const d = new LibvirtDaemon(uri, started);
    // the socket answers once libvirtd is ready (first start probes QEMU capabilities: a few seconds)
    const deadline = performance.now() + (opts.timeoutMs ?? 60_000);
    for (;;) {
      try {
        await execa('virsh', ['-c', uri, 'uri']);
        return d;
      } catch (err) {
        if (performance.now() > deadline) throw new ToolError('virsh', `libvirtd at ${uri} does not answer: ${(err as Error).message}`);
        await sleep(100);
      }
    }
  }

  /** Stop the daemons this helper started (libvirtd first), by PID; waits for them to exit. */
  async stop(): Promise<void> {
    for (const name of ['libvirtd', 'virtlogd'] as const) {
      const pid = this.started[name];
      if (pid === undefined || !runningAs(pid, name)) continue;
      process.kill(pid, 'SIGTERM');
      const deadline = performance.now() + 10_000;
      while (runningAs(pid, name)) {
        if (performance.now() > deadline) {
          process.kill(pid, 'SIGKILL');
          break;
        }
        await sleep(50);
      }
      delete this.started[name];
    }
  }
}
