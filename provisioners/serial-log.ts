// Waiting for a line on a VM's serial console log: how a provisioner knows a booted guest is ready
// (`CIEL-READY <container>`), without a channel into the guest.

import { existsSync, openSync, readSync, closeSync, statSync } from 'node:fs';
import { abortableSleep as sleep } from '../common/sleep.ts';
import { ProvisionError } from './errors.ts';

/**
 * Poll `file` from byte `from` until `text` appears. `alive()` false (the VM died) or the timeout
 * end the wait with an error carrying the log's tail.
 */
export async function waitForText(
  file: string,
  text: string,
  opts: { from?: number; timeoutMs: number; alive?: () => boolean | Promise<boolean>; pollMs?: number; vm?: string },
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
      throw new ProvisionError(opts.vm, 'boot', `VM exited before "${text}" appeared in ${file}; console tail: ${JSON.stringify(seen.slice(-400))}`);
    }
    if (performance.now() > deadline) {
      throw new ProvisionError(opts.vm, 'boot', `"${text}" did not appear in ${file} within ${opts.timeoutMs} ms; console tail: ${JSON.stringify(seen.slice(-400))}`);
    }
    await sleep(opts.pollMs ?? 50);
  }
}
