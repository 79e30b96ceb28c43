// Running the disk tools (debugfs, qemu-img, qemu-storage-daemon) on untrusted images: every run
// has a timeout and an output cap, and a missing tool is named with the Debian package that has it.

import { spawn } from 'node:child_process';
import { ToolError } from '../common/errors.ts';

const PACKAGE_OF: Record<string, string> = { debugfs: 'e2fsprogs', 'qemu-img': 'qemu-utils', 'qemu-storage-daemon': 'qemu-system-common' };
const MAX_TOOL_OUTPUT = 64 << 20;

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number | null;
}

export function run(cmd: string, args: string[], opts: { input?: string; timeoutMs: number }): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    let child;
    try {
      child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    } catch (e) {
      reject(new ToolError(cmd, String(e)));
      return;
    }
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let size = 0;
    let killedFor = '';
    const kill = (why: string) => {
      if (!killedFor) {
        killedFor = why;
        child.kill('SIGKILL');
      }
    };
    const timer = setTimeout(() => kill(`timed out after ${opts.timeoutMs} ms`), opts.timeoutMs);
    const onData = (into: Buffer[]) => (d: Buffer) => {
      size += d.length;
      if (size > MAX_TOOL_OUTPUT) kill(`printed more than ${MAX_TOOL_OUTPUT} bytes`);
      else into.push(d);
    };
    child.stdout.on('data', onData(out));
    child.stderr.on('data', onData(err));
    child.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new ToolError(cmd, e.code === 'ENOENT' ? `not found (install the Debian package ${PACKAGE_OF[cmd] ?? cmd})` : e.message));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (killedFor) reject(new ToolError(cmd, killedFor));
      else resolve({ stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), code });
    });
    child.stdin.on('error', () => {}); // the tool may exit before reading all its input
    child.stdin.end(opts.input ?? '');
  });
}
