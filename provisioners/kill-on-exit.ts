// Child processes that must not outlive this one (the QEMU-direct provisioner's VMs, unless keepOnExit):
// a test or daemon that exits (an uncaught error included) leaves no QEMU behind.

import type { ChildProcess } from 'node:child_process';

const live = new Set<ChildProcess>();
let exitHook = false;
/** SIGKILL `c` if it is still running when this process exits. */
export function killOnExit(c: ChildProcess): void {
  live.add(c);
  c.once('exit', () => live.delete(c));
  if (!exitHook) {
    exitHook = true;
    // never leave QEMU processes behind when the test/daemon process dies
    process.once('exit', () => {
      for (const p of live) p.kill('SIGKILL');
    });
  }
}
