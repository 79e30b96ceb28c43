// Facts about a kernel that its headers do not carry but its BTF does, handed to the monitor's C
// code as -D flags (kernel-src/ciel_private.h explains each). The layout check afterwards compares
// every struct built from them with the same BTF, so a wrong value fails the build.
import { BtfLookupError, type Btf } from './btf.ts';

function has(fn: () => unknown): boolean {
  try {
    fn();
    return true;
  } catch (e) {
    if (e instanceof BtfLookupError) return false;
    throw e;
  }
}

export function btfDefines(btf: Btf): string[] {
  const defs: string[] = [];
  // 6.10+: memcg's per-node stat arrays are sized by memcontrol.c's private item list
  if (has(() => btf.findStruct('lruvec_stats_percpu')) && !has(() => btf.memberOffset('mem_cgroup_per_node', 'lruvec_stats.state'))) {
    const size = btf.structSize('lruvec_stats_percpu');
    defs.push(`-DCIEL_NR_MEMCG_NODE_STAT_ITEMS=${size / 16}`);
  }
  // net_device.pcpu_stat_type: upstream 6.7, backported into later Debian 6.1 ABIs; absent on 5.10
  if (!has(() => btf.member('net_device', 'pcpu_stat_type'))) defs.push('-DCIEL_NO_PCPU_STAT_TYPE');
  // struct pcpu_dstats: absent on 5.10
  if (!has(() => btf.findStruct('pcpu_dstats'))) defs.push('-DCIEL_NO_PCPU_DSTATS');
  return defs;
}
