export * from './provisioner.ts';
export { VmPool, type PoolOptions, type WarmStarted } from './pool.ts';
export type { VmBackend, RestoredVm, SavedImage } from './vm-backend.ts';
export { ProvisionError } from './errors.ts';
export { QemuDirectProvisioner, QemuDirectVms, type QemuDirectOptions } from './qemu-direct.ts';
export { LibvirtProvisioner, LibvirtVms, type LibvirtOptions } from './libvirt.ts';
export { LibvirtDaemon, DEFAULT_URI } from './libvirt-daemon.ts';
export {
  editDomainXml,
  domainDisk,
  domainMacs,
  domainCtlSocket,
  templateXml,
  type DomainEdits,
  type TemplateDomain,
} from './libvirt-xml.ts';
export { readSaveImage, SaveImageError, type SaveImage } from './libvirt-warm.ts';
export { GuestChannel, type ExecResult } from './guest-channel.ts';
export { fixupScript, type WarmIdentity, type WarmImage } from './warm-identity.ts';
