// Replicas as a `ciel autoscale` config describes them: the spec of one (the minimal VM, with
// `{container}` and `{ip}` filled in) and the provisioner that starts them (qemu-direct or libvirt).

import { mkdirSync } from 'node:fs';
import { InvalidValueError } from '../common/errors.ts';
import { isContainerName } from '../common/guest-text.ts';
import { LibvirtProvisioner } from '../provisioners/libvirt.ts';
import type { VmPool } from '../provisioners/pool.ts';
import type { Vm, VmSpec } from '../provisioners/provisioner.ts';
import { QemuDirectProvisioner } from '../provisioners/qemu-direct.ts';
import type { ReplicaProvisionerConfig } from './config.ts';

/** The spec of one replica of `container`: the configured minimal VM, `{container}` (and `{ip}`) filled in. */
export function replicaSpec(p: ReplicaProvisionerConfig, container: string, name: string, ip?: string): VmSpec {
  // the container's name came from the guest's disk; in a kernel command line a space or '=' would add
  // parameters, so only a name Docker itself allows is ever filled in
  if (!isContainerName(container)) throw new InvalidValueError('container', `${JSON.stringify(container.slice(0, 80))} is not a Docker container name: never put in a kernel command line`);
  const fill = (t: string) => t.replaceAll('{container}', container).replaceAll('{ip}', ip ?? '');
  return {
    name,
    container,
    vcpus: p.vcpus,
    memMiB: p.memMiB,
    kernel: p.kernel,
    initrd: p.initrd,
    cmdline: fill(p.cmdline),
    disk: p.disk,
    ...(p.ready !== undefined ? { ready: p.ready === null ? null : fill(p.ready) } : {}),
  };
}

/**
 * The configured provisioner. `keepOnExit`: QEMU-direct replicas outlive this process; `beforeBoot`: a
 * fresh clone's disk is made, it is about to boot (the controller records the step).
 */
export function makeProvisioner(p: ReplicaProvisionerConfig, o: { keepOnExit: boolean; beforeBoot?: (vm: Vm) => Promise<void> }): VmPool {
  if (p.dir) mkdirSync(p.dir, { recursive: true });
  const hook = o.beforeBoot ? { beforeBoot: o.beforeBoot } : {};
  if (p.kind === 'libvirt') return new LibvirtProvisioner({ template: p.template, uri: p.uri, ...hook, ...(p.dir ? { dir: p.dir } : {}) });
  return new QemuDirectProvisioner({ template: p.template, keepOnExit: o.keepOnExit, ...hook, ...(p.dir ? { dir: p.dir } : {}) });
}
