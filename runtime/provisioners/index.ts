export * from './provisioner.ts';
export { QemuDirectProvisioner, type QemuDirectOptions } from './qemu-direct.ts';
export {
  LibvirtDaemon,
  LibvirtProvisioner,
  editDomainXml,
  domainDisk,
  parseDomstats,
  templateXml,
  DEFAULT_URI,
  type DomainEdits,
  type LibvirtOptions,
  type TemplateDomain,
} from './libvirt.ts';
export { ensureTestGuest, GUEST_KERNEL_RELEASE, type TestGuest } from './guest.ts';
