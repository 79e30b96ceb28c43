// libvirt domain XML, the pure part of the libvirt provisioner (libvirt.ts): the template domain's XML,
// the edits that turn the template's (or a save image's) XML into a clone's (`virsh domstats --raw`
// parsing is vmstats/libvirt-domstats.ts's). No I/O here; the editing works on libvirt's own normalised
// `dumpxml` formatting (single quotes, one element per line), which is what `dumpxml` and save images
// give back.

import { chooseAccel } from '../common/accel.ts';
import { ProvisionError } from './errors.ts';
import { newMac } from './mac.ts';

export function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;').replace(/"/g, '&quot;');
}

function xmlUnescape(s: string): string {
  return s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&apos;/g, "'").replace(/&quot;/g, '"').replace(/&amp;/g, '&');
}

export interface TemplateDomain {
  name: string;
  /** qcow2 template disk */
  disk: string;
  kernel: string;
  initrd: string;
  cmdline: string;
  vcpus: number;
  memMiB: number;
  serialLog: string;
  /**
   * Unix socket of the control channel: a second UART (ttyS1, `<serial type='unix'>`, QEMU listening)
   * where the guest runs its command loop (guest-channel.ts). Default: `serialLog` with `.ctl` for its
   * `.log`/`.serial.log` ending. At most 107 bytes (sun_path).
   */
  ctlSocket?: string;
  /**
   * A NIC so clones get (and need) a new MAC. 'udp-loopback': a point-to-point UDP socket on 127.0.0.1
   * (no host interface, nothing leaves the host); real networks: a bridge inside a network namespace.
   */
  nic?: 'udp-loopback' | 'none';
  /** the NIC's model; default 'virtio'. The test guest (guest.ts) has a driver for 'e1000' only. */
  nicModel?: 'virtio' | 'e1000';
}

/** The default control socket next to a serial log: `x.serial.log` / `x.log` → `x.ctl`. */
export function ctlSocketFor(serialLog: string): string {
  return serialLog.replace(/(\.serial)?\.log$/, '') + '.ctl';
}

function checkSocketPath(path: string): string {
  if (Buffer.byteLength(path) > 107) throw new ProvisionError(undefined, 'domain-xml', `control socket path longer than 107 bytes (unix sun_path): ${path}`);
  return path;
}

/** The template's domain XML (what `defineTemplate` defines). */
export function templateXml(t: TemplateDomain): string {
  const nic =
    (t.nic ?? 'udp-loopback') === 'udp-loopback'
      ? `
    <interface type='udp'>
      <mac address='${newMac()}'/>
      <source address='127.0.0.1' port='1'>
        <local address='127.0.0.1' port='0'/>
      </source>
      <model type='${t.nicModel ?? 'virtio'}'/>
    </interface>`
      : '';
  return `<domain type='${chooseAccel().kind === 'kvm' ? 'kvm' : 'qemu'}'>
  <name>${xmlEscape(t.name)}</name>
  <memory unit='KiB'>${t.memMiB * 1024}</memory>
  <currentMemory unit='KiB'>${t.memMiB * 1024}</currentMemory>
  <memoryBacking>
    <source type='file'/>
    <access mode='shared'/>
  </memoryBacking>
  <vcpu placement='static'>${t.vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${xmlEscape(t.kernel)}</kernel>
    <initrd>${xmlEscape(t.initrd)}</initrd>
    <cmdline>${xmlEscape(t.cmdline)}</cmdline>
  </os>
  <cpu mode='custom' match='exact'>
    <model fallback='allow'>qemu64</model>
  </cpu>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='unsafe'/>
      <source file='${xmlEscape(t.disk)}'/>
      <target dev='vda' bus='virtio'/>
    </disk>${nic}
    <serial type='file'>
      <source path='${xmlEscape(t.serialLog)}' append='off'/>
      <target port='0'/>
    </serial>
    <serial type='unix'>
      <source mode='bind' path='${xmlEscape(checkSocketPath(t.ctlSocket ?? ctlSocketFor(t.serialLog)))}'/>
      <target port='1'/>
    </serial>
    <memballoon model='virtio'>
      <stats period='1'/>
    </memballoon>
  </devices>
  <seclabel type='static' model='dac' relabel='no'>
    <label>+0:+0</label>
  </seclabel>
</domain>
`;
}

export interface DomainEdits {
  name?: string;
  dropUuid?: boolean;
  /** set this UUID (replacing the domain's, or added after <name>) */
  uuid?: string;
  /** new MAC for every <mac address=.../> (one per NIC, in order; generated when too few) */
  macs?: string[];
  /** new path of the first file-backed disk; drops its <backingStore> (libvirt probes it again) */
  disk?: string;
  /** new path of the file-backed serial console (every occurrence: <serial> and its <console>) */
  serialLog?: string;
  /**
   * new path of the control channel's unix socket (`<serial type='unix'>`, ttyS1); a domain without
   * one gets one (a second UART, port 1)
   */
  ctlSocket?: string;
  vcpus?: number;
  memMiB?: number;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  /** new local/remote ports for UDP NICs */
  udpPorts?: { local: number; remote: number };
}

/** Edit libvirt's (normalised, `dumpxml` formatted) domain XML. Throws when an element is missing. */
export function editDomainXml(xml: string, e: DomainEdits): string {
  let x = xml;
  const fail = (msg: string) => new ProvisionError(nameIn(xml), 'domain-xml', msg);
  const must = (re: RegExp, what: string) => {
    if (!re.test(x)) throw fail(`domain XML has no ${what}`);
  };
  if (e.name !== undefined) {
    must(/<name>[^<]*<\/name>/, '<name>');
    x = x.replace(/<name>[^<]*<\/name>/, `<name>${xmlEscape(e.name)}</name>`);
  }
  if (e.dropUuid) x = x.replace(/^[ \t]*<uuid>[^<]*<\/uuid>[ \t]*\r?\n?/m, '');
  if (e.uuid !== undefined) {
    if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(e.uuid)) throw fail(`bad UUID ${JSON.stringify(e.uuid)}`);
    if (/<uuid>[^<]*<\/uuid>/.test(x)) x = x.replace(/<uuid>[^<]*<\/uuid>/, `<uuid>${e.uuid}</uuid>`);
    else {
      must(/<\/name>/, '<name>');
      x = x.replace(/([ \t]*)(<name>[^<]*<\/name>)/, `$1$2\n$1<uuid>${e.uuid}</uuid>`);
    }
  }
  if (e.macs !== undefined) {
    let i = 0;
    x = x.replace(/<mac address='[^']*'\/>/g, () => `<mac address='${e.macs![i++] ?? newMac()}'/>`);
  }
  if (e.disk !== undefined) {
    const re = /<disk type='file' device='disk'>[\s\S]*?<\/disk>/;
    must(re, "<disk type='file' device='disk'>");
    x = x.replace(re, (blk) => {
      let b = blk.replace(/<source file='[^']*'/, `<source file='${xmlEscape(e.disk!)}'`);
      b = b.replace(/\n?[ \t]*<backingStore\/>/g, '').replace(/\n?[ \t]*<backingStore[\s\S]*?<\/backingStore>/g, '');
      return b;
    });
  }
  if (e.serialLog !== undefined) {
    const m = /<serial type='file'>\s*<source path='([^']*)'/.exec(x);
    if (!m) throw fail("domain XML has no <serial type='file'>");
    const old = m[1]!;
    x = x.split(`path='${old}'`).join(`path='${xmlEscape(e.serialLog)}'`);
  }
  if (e.ctlSocket !== undefined) {
    const path = xmlEscape(checkSocketPath(e.ctlSocket));
    const re = /(<serial type='unix'>\s*<source mode='bind' path=')[^']*'/;
    if (re.test(x)) x = x.replace(re, `$1${path}'`);
    else {
      must(/<\/serial>/, '<serial>');
      const at = x.lastIndexOf('</serial>') + '</serial>'.length;
      const indent = /\n([ \t]*)<serial/.exec(x)?.[1] ?? '    ';
      x = `${x.slice(0, at)}\n${indent}<serial type='unix'>\n${indent}  <source mode='bind' path='${path}'/>\n${indent}  <target port='1'/>\n${indent}</serial>${x.slice(at)}`;
    }
  }
  if (e.vcpus !== undefined) {
    must(/<vcpu[^>]*>\d+<\/vcpu>/, '<vcpu>');
    x = x.replace(/<vcpu([^>]*)>\d+<\/vcpu>/, `<vcpu$1>${e.vcpus}</vcpu>`);
  }
  if (e.memMiB !== undefined) {
    must(/<memory[^>]*>\d+<\/memory>/, '<memory>');
    x = x.replace(/<memory[^>]*>\d+<\/memory>/, `<memory unit='KiB'>${e.memMiB * 1024}</memory>`);
    x = x.replace(/<currentMemory[^>]*>\d+<\/currentMemory>/, `<currentMemory unit='KiB'>${e.memMiB * 1024}</currentMemory>`);
  }
  for (const tag of ['kernel', 'initrd', 'cmdline'] as const) {
    const v = e[tag];
    if (v === undefined) continue;
    const re = new RegExp(`<${tag}>[^<]*</${tag}>`);
    must(re, `<${tag}>`);
    x = x.replace(re, `<${tag}>${xmlEscape(v)}</${tag}>`);
  }
  if (e.udpPorts) {
    x = x.replace(/<interface type='udp'>[\s\S]*?<\/interface>/g, (blk) =>
      blk
        .replace(/(<source address='[^']*' port=')\d+'/, `$1${e.udpPorts!.remote}'`)
        .replace(/(<local address='[^']*' port=')\d+'/, `$1${e.udpPorts!.local}'`),
    );
  }
  return x;
}

/** The domain's name in its XML (for errors), or undefined. */
function nameIn(xml: string): string | undefined {
  const m = /<name>([^<]*)<\/name>/.exec(xml);
  return m ? xmlUnescape(m[1]!) : undefined;
}

/** The MACs of a domain XML's NICs, in order. */
export function domainMacs(xml: string): string[] {
  return [...xml.matchAll(/<mac address='([^']*)'\/>/g)].map((m) => m[1]!);
}

/** The control channel's socket path (`<serial type='unix'>`), or undefined. */
export function domainCtlSocket(xml: string): string | undefined {
  const m = /<serial type='unix'>\s*<source mode='bind' path='([^']*)'/.exec(xml);
  return m ? xmlUnescape(m[1]!) : undefined;
}

/** The first file-backed disk's path in a domain XML. */
export function domainDisk(xml: string): string {
  const m = /<disk type='file' device='disk'>[\s\S]*?<source file='([^']*)'/.exec(xml);
  if (!m) throw new ProvisionError(nameIn(xml), 'domain-xml', "domain XML has no <disk type='file' device='disk'> with a source file");
  return xmlUnescape(m[1]!);
}
