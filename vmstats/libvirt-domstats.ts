// VM-level stats of a libvirt domain from `virsh domstats --raw` (cpu.time, balloon, vcpu, block, net).
// The reader needs only the domain's name and a way to run virsh (the libvirt provisioner's, or one
// of `ciel autoscale`'s configured URIs): nothing here knows how the domain was made.

import type { VmStats } from './vm-stats.ts';

/** Parse `virsh domstats --raw` output (one domain) into VmStats. */
export function parseDomstats(text: string, vm: string, time: string): VmStats {
  const kv = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^\s*([\w.-]+)=(.*)$/.exec(line);
    if (m) kv.set(m[1]!, m[2]!);
  }
  const num = (k: string): number | undefined => (kv.has(k) ? Number(kv.get(k)) : undefined);
  const sum = (prefix: string, count: string, suffix: string) => {
    let s = 0;
    const n = num(count) ?? 0;
    for (let i = 0; i < n; i++) s += num(`${prefix}.${i}.${suffix}`) ?? 0;
    return s;
  };
  const currentKiB = num('balloon.current') ?? num('balloon.maximum') ?? 0;
  const avail = num('balloon.available');
  const unused = num('balloon.unused');
  const usedKiB = avail !== undefined && unused !== undefined ? avail - unused : (num('balloon.rss') ?? currentKiB);
  return {
    time,
    vm,
    vcpus: num('vcpu.current') ?? 1,
    cpu_time_ns: num('cpu.time') ?? 0,
    memory_used_bytes: usedKiB * 1024,
    memory_total_bytes: currentKiB * 1024,
    block_rd_bytes: sum('block', 'block.count', 'rd.bytes'),
    block_wr_bytes: sum('block', 'block.count', 'wr.bytes'),
    net_rx_bytes: sum('net', 'net.count', 'rx.bytes'),
    net_tx_bytes: sum('net', 'net.count', 'tx.bytes'),
  };
}

/** One reading of `domain`, through `virsh` (`virsh -c URI ...args`, returning its stdout). */
export async function readDomstats(virsh: (...args: string[]) => Promise<string>, domain: string): Promise<VmStats> {
  const t0 = Date.now();
  const out = await virsh('domstats', '--raw', '--cpu-total', '--balloon', '--vcpu', '--block', '--interface', domain);
  const t1 = Date.now();
  // the counters were read somewhere inside the call: stamp the midpoint
  return parseDomstats(out, domain, new Date(Math.round((t0 + t1) / 2)).toISOString());
}
