// The user's load balancer as `ciel autoscale` reaches it: a program run as
// `HOOK add|remove SERVICE VM ADDRESS` (the config's balancer.hook), or nobody (NO_BALANCER).

import { spawn } from 'node:child_process';
import { BalancerError } from '../common/errors.ts';
import type { Backend, LoadBalancer } from './autoscaler.ts';

/** A balancer that registers nothing (replicas are started, nobody is told). */
export const NO_BALANCER: LoadBalancer = { addBackend: async () => {}, removeBackend: async () => {} };

/**
 * The user's load balancer, through a program: `HOOK add|remove SERVICE VM ADDRESS` (ADDRESS `-` when
 * the replica's address is not known). An exit status other than 0, a signal, or no exit within
 * `timeoutMs` (then the hook's process group is killed) is an error, which the Autoscaler reports as
 * action_failed. Its output is kept only for that error message.
 */
export class HookBalancer implements LoadBalancer {
  constructor(
    readonly hook: string,
    private readonly addressOf: (b: Backend) => string | undefined = () => undefined,
    private readonly timeoutMs = 30_000,
  ) {}

  addBackend(service: string, b: Backend): Promise<void> {
    return this.run('add', service, b);
  }

  removeBackend(service: string, b: Backend): Promise<void> {
    return this.run('remove', service, b);
  }

  private run(op: 'add' | 'remove', service: string, b: Backend): Promise<void> {
    const address = b.address ?? this.addressOf(b);
    const args = [op, service, b.vm, address ?? '-'];
    const what = `balancer hook \`${[this.hook, ...args].join(' ')}\``;
    return new Promise((resolve, reject) => {
      // its own process group: on timeout the hook and anything it started go (only what we started)
      const child = spawn(this.hook, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      let said = '';
      const keep = (d: Buffer) => (said = (said + d.toString('utf8')).slice(-2000));
      child.stdout!.on('data', keep);
      child.stderr!.on('data', keep);
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          /* gone already */
        }
      }, this.timeoutMs);
      child.once('error', (e) => {
        clearTimeout(timer);
        reject(new BalancerError(b.vm, address, `${what}: ${e.message}`));
      });
      // the exit status decides; a background child the hook left holding its output does not hold us
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        const done = () => {
          child.stdout!.destroy();
          child.stderr!.destroy();
          if (code === 0) return resolve();
          const why = timedOut ? `no exit within ${this.timeoutMs} ms` : code !== null ? `exit status ${code}` : `killed by ${signal}`;
          const tail = said.trim().split('\n').slice(-3).join(' / ');
          reject(new BalancerError(b.vm, address, `${what}: ${why}${tail ? `: ${tail}` : ''}`));
        };
        // let the last output arrive, briefly
        const t = setTimeout(done, 100);
        child.once('close', () => {
          clearTimeout(t);
          done();
        });
      });
    });
  }
}
