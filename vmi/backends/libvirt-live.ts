// A libvirt domain as a live QEMU backend: its RAM found from its QEMU process (../libvirt-domain.ts),
// mapped read-only as for QEMU started by hand, and QMP through libvirt's passthrough (../libvirt-qmp.ts).
import { locateDomainRam } from '../libvirt-domain.ts';
import { LibvirtQmp } from '../libvirt-qmp.ts';
import { QemuLiveBackend } from './qemu-live.ts';

export async function openLibvirtBackend(o: { vm: string; domain: string; uri: string }): Promise<QemuLiveBackend> {
  const ram = await locateDomainRam(o.vm, o.domain, o.uri);
  const qmp = await LibvirtQmp.connect({ uri: o.uri, domain: o.domain, pid: ram.pid, startTime: ram.startTime });
  return QemuLiveBackend.open({ memFile: ram.path, ramBytes: ram.ramBytes, machine: ram.machine, qmp, vm: o.vm });
}
