// A clone's own disk, made from the template image.

import { tool } from './host-tool.ts';
import type { DiskStrategy } from './provisioner.ts';

/** Make a clone's disk: qcow2 overlay on the template, or a sparse copy (only allocated blocks). */
export async function cloneDisk(template: string, disk: string, strategy: DiskStrategy): Promise<void> {
  if (strategy === 'overlay') {
    await tool('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', template, '-F', 'qcow2', disk]);
  } else {
    await tool('cp', ['--sparse=always', '--', template, disk]);
  }
}
