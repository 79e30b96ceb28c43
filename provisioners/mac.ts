// MAC addresses for the provisioners' NICs.

import { randomBytes } from 'node:crypto';

/** Locally administered unicast MAC in QEMU's 52:54:00 range. */
export function newMac(): string {
  const b = randomBytes(3);
  return `52:54:00:${[...b].map((x) => x.toString(16).padStart(2, '0')).join(':')}`;
}
