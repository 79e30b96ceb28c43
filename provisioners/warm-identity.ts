// Warm start, the part both provisioners share: what a saved memory image of a booted minimal VM is,
// and the identity fix-up that turns a restored copy of it into this VM (paper 002's lesson: restoring
// a booted VM's memory beats booting it). The guest side is the test guest's `ciel.warm=1` mode
// (testbed/minimal-guest.ts): modules loaded, eth0 up without an address, no container.

import type { VmSpec } from './provisioner.ts';

/** A saved memory image of a booted minimal VM. */
export interface WarmImage {
  file: string;
  /** the saved VM's spec: clones must use the same vCPUs, memory, kernel, initrd and cmdline */
  spec: VmSpec;
}

export interface WarmIdentity {
  /** CIDR for eth0 */
  ip?: string;
  /** direct-routing VIP (on lo, ARP-silent) */
  vip?: string;
  /** containers to start; default [spec.container] */
  containers?: string[];
  load?: number;
}

/**
 * The shell script run over the control channel right after a restore: this VM's own MAC (the NIC's
 * MAC comes back from the snapshot), its address and VIP, its containers (the first one serves HTTP
 * when it has an address), then `CIEL-READY <container>` on the console as a booted guest prints it.
 */
export function fixupScript(mac: string, identity: WarmIdentity, defaultContainer: string): string {
  const containers = identity.containers ?? [defaultContainer];
  const q = (x: string) => `'${x.replace(/'/g, `'\\''`)}'`;
  const lines = [`ciel-net -m ${q(mac)} ${q(identity.ip ?? '')} ${q(identity.vip ?? '')}`];
  containers.forEach((c, i) => {
    lines.push(i === 0 ? `ciel-start ${q(c)} ${identity.load ?? 0} ${identity.ip ? 'http' : ''}` : `ciel-start ${q(c)} 0`);
  });
  lines.push(`echo "CIEL-CONTAINERS ${containers.join(' ')}" > /dev/ttyS0`);
  for (const c of containers) lines.push(`echo "CIEL-READY ${c}" > /dev/ttyS0`);
  return lines.join('\n');
}
