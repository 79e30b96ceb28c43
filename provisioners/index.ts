export * from './provisioner.ts';
export { QemuDirectProvisioner, type QemuDirectOptions } from './qemu-direct.ts';
export { LibvirtDaemon, LibvirtProvisioner, DEFAULT_URI, type LibvirtOptions } from './libvirt.ts';
export {
  editDomainXml,
  domainDisk,
  domainMacs,
  domainCtlSocket,
  parseDomstats,
  templateXml,
  type DomainEdits,
  type TemplateDomain,
} from './libvirt-xml.ts';
export { readSaveImage, SaveImageError, type SaveImage } from './libvirt-warm.ts';
export { GuestChannel, type ExecResult } from './guest-channel.ts';
export { fixupScript, type WarmIdentity, type WarmImage } from './warm-identity.ts';
