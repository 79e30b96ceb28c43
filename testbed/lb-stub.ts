// A STAND-IN for the load balancer, NOT IPVS: it keeps the backend list the controller registers and,
// when asked to drive load, sends HTTP requests round-robin itself, from a client inside the private
// network namespace, to each backend's own address, counting the replies per backend. It exists so the
// demo and tests show real requests reaching real replicas when the IPVS balancer VM
// (testbed/lb/ipvs-vm.ts) is not available; it has no virtual IP, no kernel forwarding, no DR.

import { execa } from 'execa';
import type { Backend, LoadBalancer } from '../controller/autoscaler.ts';

export interface StubBalancerOptions {
  /** network namespace the client runs in */
  ns: string;
  /** a backend's address (the controller's Backend carries only the VM name) */
  addressOf(b: Backend): string | undefined;
  /** HTTP port of the backends; default 80 */
  port?: number;
}

export class RoundRobinStubBalancer implements LoadBalancer {
  readonly kind = 'round-robin stub (not IPVS)';
  private readonly backends: { service: string; address: string; vm: string }[] = [];
  private readonly served = new Map<string, number>();
  private next = 0;

  constructor(private readonly o: StubBalancerOptions) {}

  async addBackend(service: string, b: Backend): Promise<void> {
    const address = b.address ?? this.o.addressOf(b);
    if (!address) throw new Error(`no address for backend ${b.vm} of ${service}`);
    if (!this.backends.some((x) => x.service === service && x.address === address)) this.backends.push({ service, address, vm: b.vm });
  }

  async removeBackend(service: string, b: Backend): Promise<void> {
    const address = b.address ?? this.o.addressOf(b);
    const i = this.backends.findIndex((x) => x.service === service && (x.address === address || x.vm === b.vm));
    if (i >= 0) this.backends.splice(i, 1);
  }

  list(service?: string): { service: string; address: string; vm: string }[] {
    return this.backends.filter((b) => service === undefined || b.service === service);
  }

  /**
   * Send `n` requests for `service`, round-robin over its backends, in one shell loop inside the
   * namespace (curl, 5 s timeout each). Returns the replies per backend address of this call.
   */
  async drive(service: string, n: number): Promise<Record<string, number>> {
    const bs = this.list(service);
    if (bs.length === 0) return {};
    const port = this.o.port ?? 80;
    const targets: string[] = [];
    for (let i = 0; i < n; i++) targets.push(bs[(this.next++) % bs.length]!.address);
    const script = `for a in ${targets.join(' ')}; do curl -s --max-time 5 -o /dev/null -w "%{http_code} $a\\n" http://$a:${port}/ || echo "000 $a"; done`;
    const r = await execa('ip', ['netns', 'exec', this.o.ns, 'sh', '-c', script], { reject: false, timeout: 10_000 + n * 5_000 });
    const got: Record<string, number> = {};
    for (const line of String(r.stdout).split('\n')) {
      const [code, addr] = line.trim().split(' ');
      if (code === '200' && addr) {
        got[addr] = (got[addr] ?? 0) + 1;
        this.served.set(addr, (this.served.get(addr) ?? 0) + 1);
      }
    }
    return got;
  }

  /** Requests answered per backend address since the start. */
  counts(): Record<string, number> {
    return Object.fromEntries(this.served);
  }
}
