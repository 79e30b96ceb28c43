// The typed error of the provisioners (and the lab's VMs built on them): which VM or domain, and which
// step of its life (name, define, boot, restore, fix-up, ...) went wrong. Failures of an external tool
// (qemu, virsh, qemu-img) stay ToolError, a bad save image SaveImageError.

import { CielError } from '../common/errors.ts';

export class ProvisionError extends CielError {
  constructor(
    /** the VM (domain) name; undefined when the failing input names none */
    readonly vm: string | undefined,
    /** the step that failed, e.g. 'boot', 'restore', 'fixup', 'domain-xml' */
    readonly step: string,
    message: string,
  ) {
    super(message);
  }
}
