// A VM to watch, the one description both `ciel monitor` and `ciel autoscale` hand to a VmSession
// (vmi/session.ts): its name and where its memory, registers and kernel come from. The config files
// (monitor/config.ts, controller/config.ts) stay what the user writes; they map to this.
import { VmError } from '../common/errors.ts';

export const BACKEND_KINDS = ['qemu', 'vmcore', 'xen', 'raw'] as const;
/** Where guest memory comes from: a live QEMU, an ELF dump, a Xen domain, a raw physical-memory file. */
export type BackendKind = (typeof BACKEND_KINDS)[number];

interface Common {
  /** unique: the `vm` of samples, metrics and error messages */
  name: string;
  /**
   * guest kernel release (a build in generated/<release>/), checked against the guest's own; absent:
   * read from the guest's memory at each attach
   */
  kernel?: string;
}

/** A live QEMU/KVM guest: RAM shared through memory-backend-file,share=on; registers and pause through QMP. */
export interface QemuVmTarget extends Common {
  backend: 'qemu';
  qmp: string;
  memory: string;
}

/** A raw physical-memory file (no CPU state: the page tables come from the VMCOREINFO in its RAM). */
export interface RawVmTarget extends Common {
  backend: 'raw';
  memory: string;
}

/** An ELF dump (dump-guest-memory, virsh dump --memory-only). */
export interface VmcoreVmTarget extends Common {
  backend: 'vmcore';
  vmcore: string;
}

/** A Xen HVM/PVH domain, read from Dom0. */
export interface XenVmTarget extends Common {
  backend: 'xen';
  domid: number;
}

export type VmTarget = QemuVmTarget | RawVmTarget | VmcoreVmTarget | XenVmTarget;

/** The loosely typed fields a config file or the command line gives (every backend's fields optional). */
export interface VmTargetFields {
  name: string;
  backend: BackendKind;
  kernel?: string;
  qmp?: string;
  memory?: string;
  vmcore?: string;
  domid?: number;
}

/** Only live backends can stop the vCPUs around a read; a dump or a raw file is read as it is. */
export function canPause(kind: BackendKind): boolean {
  return kind === 'qemu' || kind === 'xen';
}

/** A VmTarget from loose fields; a field the backend needs and lacks is a VmError naming the VM. */
export function vmTarget(f: VmTargetFields): VmTarget {
  const need = (what: string): never => {
    throw new VmError(f.name, `the ${f.backend} backend needs ${what}`);
  };
  const kernel = f.kernel !== undefined ? { kernel: f.kernel } : {};
  switch (f.backend) {
    case 'qemu':
      if (!f.qmp || !f.memory) need('a QMP socket and a memory file');
      return { name: f.name, backend: 'qemu', ...kernel, qmp: f.qmp!, memory: f.memory! };
    case 'raw':
      if (!f.memory) need('a memory file');
      return { name: f.name, backend: 'raw', ...kernel, memory: f.memory! };
    case 'vmcore':
      if (!f.vmcore) need('a dump file');
      return { name: f.name, backend: 'vmcore', vmcore: f.vmcore!, ...kernel };
    case 'xen':
      if (f.domid === undefined) need('a domain id');
      return { name: f.name, backend: 'xen', ...kernel, domid: f.domid! };
    default:
      throw new VmError(f.name, `unknown backend ${JSON.stringify(f.backend)} (known: ${BACKEND_KINDS.join(', ')})`);
  }
}
