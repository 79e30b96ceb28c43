// Helpers shared by the provisioners: waiting for the ready line on a serial log, MACs, timing.

import { existsSync, openSync, readSync, closeSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import { ToolError } from '../common/errors.ts';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Locally administered unicast MAC in QEMU's 52:54:00 range. */
export function newMac(): string {
  const b = randomBytes(3);
  return `52:54:00:${[...b].map((x) => x.toString(16).padStart(2, '0')).join(':')}`;
}

/**
 * Poll `file` from byte `from` until `text` appears. `alive()` false (the VM died) or the timeout
 * end the wait with an error carrying the log's tail.
 */
export async function waitForText(
  file: string,
  text: string,
  opts: { from?: number; timeoutMs: number; alive?: () => boolean | Promise<boolean>; pollMs?: number },
): Promise<void> {
  const deadline = performance.now() + opts.timeoutMs;
  let from = opts.from ?? 0;
  let seen = '';
  for (;;) {
    if (existsSync(file)) {
      const size = statSync(file).size;
      if (size < from) from = 0; // truncated (a new boot)
      if (size > from) {
        const fd = openSync(file, 'r');
        try {
          const buf = Buffer.alloc(size - from);
          readSync(fd, buf, 0, buf.length, from);
          seen = (seen + buf.toString('latin1')).slice(-64 * 1024);
          from = size;
        } finally {
          closeSync(fd);
        }
        if (seen.includes(text)) return;
      }
    }
    if (opts.alive && !(await opts.alive())) {
      throw new Error(`VM exited before "${text}" appeared in ${file}; console tail: ${JSON.stringify(seen.slice(-400))}`);
    }
    if (performance.now() > deadline) {
      throw new Error(`"${text}" did not appear in ${file} within ${opts.timeoutMs} ms; console tail: ${JSON.stringify(seen.slice(-400))}`);
    }
    await sleep(opts.pollMs ?? 50);
  }
}

export async function tool(cmd: string, args: string[], input?: string): Promise<string> {
  try {
    const r = await execa(cmd, args, input === undefined ? {} : { input });
    return r.stdout;
  } catch (err) {
    const e = err as { stderr?: string; shortMessage?: string; message: string };
    throw new ToolError(cmd, `${args.join(' ')}: ${(e.stderr || e.shortMessage || e.message).toString().trim()}`);
  }
}

/** Make a clone's disk: qcow2 overlay on the template, or a sparse copy (only allocated blocks). */
export async function cloneDisk(template: string, disk: string, strategy: 'overlay' | 'sparse-copy'): Promise<void> {
  if (strategy === 'overlay') {
    await tool('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', template, '-F', 'qcow2', disk]);
  } else {
    await tool('cp', ['--sparse=always', '--', template, disk]);
  }
}

export function fileSize(file: string): number {
  return existsSync(file) ? statSync(file).size : 0;
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
