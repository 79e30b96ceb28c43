// VM-level stats (the cheap level, read every interval) of the origin VMs a `ciel autoscale` config
// names: /proc of a QEMU pid (ProcVmStats) or `virsh domstats` of a libvirt domain.

import { VmError } from '../common/errors.ts';
import { tool } from '../provisioners/host-tool.ts';
import type { Vm } from '../provisioners/provisioner.ts';
import { readDomstats } from '../vmstats/libvirt-domstats.ts';
import type { VmStatsSource } from './autoscaler.ts';
import type { AutoscaleVm } from './config.ts';
import type { VmStats } from './types.ts';
import { ProcVmStats } from './proc-vm-stats.ts';

/**
 * VM-level stats of the configured origin VMs, under their configured names: /proc/<pid> for QEMU
 * started directly, `virsh -c URI domstats DOMAIN` (vmstats/libvirt-domstats.ts) for libvirt domains.
 */
export function vmLevelSource(vms: readonly AutoscaleVm[]): VmStatsSource {
  const domains = new Map<string, { domain: string; uri: string }>();
  for (const v of vms) if (v.stats.kind === 'libvirt') domains.set(v.name, { domain: v.stats.domain, uri: v.stats.uri });
  const libvirt = {
    async vmStats(vm: Vm | string): Promise<VmStats> {
      const name = typeof vm === 'string' ? vm : vm.name;
      const d = domains.get(name);
      if (!d) throw new VmError(name, 'no VM-level stats source (not a libvirt VM of the config)');
      // the engine knows the VM by its configured name, not the domain's
      return { ...(await readDomstats((...a) => tool('virsh', ['-c', d.uri, ...a]), d.domain)), vm: name };
    },
  };
  const src = new ProcVmStats(libvirt);
  for (const v of vms) if (v.stats.kind === 'proc') src.add({ name: v.name, pid: v.stats.pid, vcpus: v.stats.vcpus, memMiB: v.stats.memMiB });
  return src;
}
