// A VM to watch, the one description both `ciel monitor` and `ciel autoscale` hand to a VmSession
// (vmi/session.ts): its name and where its memory, registers and kernel come from. The config files
// (monitor/config.ts, controller/config.ts) stay what the user writes; they map to this.
import { VmError } from '../common/errors.ts';

/** libvirt's system connection: where `ciel monitor --libvirt` and config entries look without a URI */
export const DEFAULT_LIBVIRT_URI = 'qemu:///system';

/** a libvirt domain name: no '/' (libvirt refuses it), not starting with '-' (virsh would take it for an option) */
export const DOMAIN_NAME = /^[^-/\s][^/]*$/;

export const BACKEND_KINDS = ['qemu', 'libvirt', 'vmcore', 'xen', 'raw'] as const;
/** Where guest memory comes from: a live QEMU, a libvirt domain, an ELF dump, a Xen domain, a raw physical-memory file. */
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

/**
 * A running libvirt domain: RAM found from its QEMU process (file or memfd memory backing, shared),
 * QMP through libvirt's monitor passthrough (vmi/libvirt-qmp.ts), so libvirt keeps its QMP socket.
 */
export interface LibvirtVmTarget extends Common {
  backend: 'libvirt';
  domain: string;
  /** libvirt connection URI, e.g. qemu:///system */
  uri: string;
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

export type VmTarget = QemuVmTarget | LibvirtVmTarget | RawVmTarget | VmcoreVmTarget | XenVmTarget;

/** The loosely typed fields a config file or the command line gives (every backend's fields optional). */
export interface VmTargetFields {
  name: string;
  backend: BackendKind;
  kernel?: string;
  qmp?: string;
  memory?: string;
  vmcore?: string;
  domid?: number;
  /** libvirt domain name and connection URI */
  domain?: string;
  uri?: string;
}

/** Only live backends can stop the vCPUs around a read; a dump or a raw file is read as it is. */
export function canPause(kind: BackendKind): boolean {
  return kind === 'qemu' || kind === 'libvirt' || kind === 'xen';
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
    case 'libvirt':
      if (!f.domain) need('a domain name');
      return { name: f.name, backend: 'libvirt', ...kernel, domain: f.domain!, uri: f.uri ?? DEFAULT_LIBVIRT_URI };
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
