// libvirt warm start: the save-image format (pure: header round trip, strict parsing, XML edits), then
// against a real libvirtd (started when absent, stopped afterwards only if this file started it): a
// booted warm-mode minimal VM (1 vCPU, 256 MiB) is saved once with `virsh save`; two NEW domains are
// restored from that one image (libvirt refuses another name/UUID/MAC under `restore --xml`, so each
// clone gets its own image header: libvirt-warm.ts) and fixed up over the control channel. A truncated
// or corrupted image must fail clearly and leave nothing defined.

import { copyFileSync, existsSync, openSync, readFileSync, rmSync, truncateSync, writeFileSync, closeSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cacheDir } from '../../common/cache.ts';
import { ensureTestGuest, type TestGuest } from '../../testbed/minimal-guest.ts';
import { LibvirtDaemon } from '../../provisioners/libvirt-daemon.ts';
import { LibvirtProvisioner } from '../../provisioners/libvirt.ts';
import { cloneImageHeader, readSaveImage, SaveImageError, SAVE_HEADER_BYTES, type SaveImage } from '../../provisioners/libvirt-warm.ts';
import { domainCtlSocket, domainDisk, domainMacs, editDomainXml, templateXml, xmlEscape } from '../../provisioners/libvirt-xml.ts';
import type { Vm, VmSpec } from '../../provisioners/provisioner.ts';
import type { WarmImage } from '../../provisioners/warm-identity.ts';

const dir = cacheDir('provisioner-test', 'libvirt-warm');

const XML = `<domain type='qemu'>
  <name>ciel-src</name>
  <uuid>4dbf2ae1-4acb-4c0d-8a2a-91181ac9e2a0</uuid>
  <devices>
    <interface type='udp'>
      <mac address='52:54:00:aa:bb:01'/>
    </interface>
    <serial type='file'>
      <source path='/logs/src.serial.log' append='off'/>
      <target type='isa-serial' port='0'/>
    </serial>
    <serial type='unix'>
      <source mode='bind' path='/logs/src.ctl'/>
      <target type='isa-serial' port='1'/>
    </serial>
  </devices>
</domain>`;

/** A synthetic save image: header + XML + cookie, then a minimal QEMU stream with its device description. */
function syntheticImage(file: string, o: { cookie?: string | null; streamBody?: Buffer } = {}): void {
  const src: SaveImage = { file: '', size: 0, version: 2, dataLen: 0, wasRunning: true, xml: XML, cookie: o.cookie === undefined ? '<cookie/>' : o.cookie, streamOffset: 0 };
  const json = Buffer.from('{"page_size": 4096, "devices": []}');
  const desc = Buffer.alloc(6);
  desc.writeUInt8(0x00, 0); // QEMU_VM_EOF
  desc.writeUInt8(0x06, 1); // QEMU_VM_VMDESCRIPTION
  desc.writeUInt32BE(json.length, 2);
  const qevm = Buffer.from([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3]);
  writeFileSync(file, Buffer.concat([cloneImageHeader(src, XML), qevm, o.streamBody ?? Buffer.alloc(1000, 0x11), desc, json]));
}

function patch(file: string, at: number, bytes: Buffer): void {
  const fd = openSync(file, 'r+');
  writeSync(fd, bytes, 0, bytes.length, at);
  closeSync(fd);
}

describe('save image format (libvirt 9.0 qemu_saveimage.h)', () => {
  const f = join(dir, 'synthetic.save');
  it('round trip: header, XML, cookie, stream offset', () => {
    syntheticImage(f);
    const img = readSaveImage(f);
    expect(img).toMatchObject({ version: 2, wasRunning: true, xml: XML, cookie: '<cookie/>' });
    expect(img.streamOffset).toBe(SAVE_HEADER_BYTES + img.dataLen);
    expect(img.dataLen).toBe(XML.length + 1 + '<cookie/>'.length + 1 + 64 * 1024);
    const raw = readFileSync(f);
    expect(raw.toString('latin1', 0, 16)).toBe('LibvirtQemudSave');
    expect(raw.readUInt32LE(32)).toBe(XML.length + 1); // cookieOffset
    expect(raw.toString('latin1', img.streamOffset, img.streamOffset + 4)).toBe('QEVM');
    syntheticImage(f, { cookie: null });
    expect(readSaveImage(f)).toMatchObject({ cookie: null });
    expect(readFileSync(f).readUInt32LE(32)).toBe(0);
  });
  it('refuses, naming the file: bad magic, partial save, version, compression, bad lengths, truncation', () => {
    const cases: [string, (file: string) => void, RegExp][] = [
      ['magic', (p) => patch(p, 0, Buffer.from('NotLibvirtImage!')), /magic "NotLibvirtImage!" is not LibvirtQemudSave/],
      ['partial', (p) => patch(p, 0, Buffer.from('LibvirtQemudPart')), /never completed this save/],
      ['version', (p) => patch(p, 16, Buffer.from([3, 0, 0, 0])), /header version 3, expected 2/],
      ['big-endian', (p) => patch(p, 16, Buffer.from([0, 0, 0, 2])), /big-endian/],
      ['gzip', (p) => patch(p, 28, Buffer.from([1, 0, 0, 0])), /compressed \(gzip\)/],
      ['data_len', (p) => patch(p, 20, Buffer.from([0xff, 0xff, 0xff, 0x0f])), /data_len \d+ does not fit/],
      ['cookieOffset', (p) => patch(p, 32, Buffer.from([0xff, 0xff, 0x0f, 0])), /cookieOffset \d+ is not inside/],
      ['reserved', (p) => patch(p, 40, Buffer.from([1])), /reserved header word/],
      ['xml', (p) => patch(p, SAVE_HEADER_BYTES, Buffer.from('<nomain')), /does not hold a <domain>/],
      ['stream', (p) => patch(p, readSaveImage(p).streamOffset, Buffer.from('QEVN')), /no QEMU migration stream/],
      ['truncated', (p) => truncateSync(p, readFileSync(p).length - 10), /truncated/],
      ['short', (p) => truncateSync(p, 50), /shorter than the 92-byte header/],
    ];
    for (const [what, damage, re] of cases) {
      syntheticImage(f);
      damage(f);
      let err: unknown;
      try {
        readSaveImage(f);
      } catch (e) {
        err = e;
      }
      expect(err, what).toBeInstanceOf(SaveImageError);
      expect((err as Error).message, what).toMatch(re);
      expect((err as Error).message, what).toContain(f);
    }
    expect(() => readSaveImage(join(dir, 'no-such.save'))).toThrow(SaveImageError);
    rmSync(f, { force: true });
  });
  it('clone XML edits: UUID, control socket (replaced, or added when missing)', () => {
    const x = editDomainXml(XML, { name: 'ciel-c1', uuid: '11111111-2222-3333-4444-555555555555', macs: ['52:54:00:00:00:01'], serialLog: '/c/c1.serial.log', ctlSocket: '/c/c1.ctl' });
    expect(x).toContain('<uuid>11111111-2222-3333-4444-555555555555</uuid>');
    expect(x).not.toContain('4dbf2ae1');
    expect(domainMacs(x)).toEqual(['52:54:00:00:00:01']);
    expect(domainCtlSocket(x)).toBe('/c/c1.ctl');
    expect(x).not.toContain('/logs/');
    const noUuid = editDomainXml(XML, { dropUuid: true });
    expect(editDomainXml(noUuid, { uuid: '11111111-2222-3333-4444-555555555555' })).toMatch(/<name>ciel-src<\/name>\n  <uuid>11111111-2222-3333-4444-555555555555<\/uuid>/);
    expect(() => editDomainXml(XML, { uuid: 'x' })).toThrow(/bad UUID/);
    const noCtl = XML.replace(/\n    <serial type='unix'>[\s\S]*?<\/serial>/, '');
    const added = editDomainXml(noCtl, { ctlSocket: '/c/new.ctl' });
    expect(domainCtlSocket(added)).toBe('/c/new.ctl');
    expect(added).toMatch(/<serial type='unix'>\n\s*<source mode='bind' path='\/c\/new.ctl'\/>\n\s*<target port='1'\/>\n\s*<\/serial>/);
    expect(() => editDomainXml(XML, { ctlSocket: `/${'x'.repeat(120)}` })).toThrow(/longer than 107 bytes/);
    const t = templateXml({ name: 't', disk: '/d', kernel: '/k', initrd: '/i', cmdline: 'c', vcpus: 1, memMiB: 128, serialLog: '/s/t.serial.log', nicModel: 'e1000' });
    expect(domainCtlSocket(t)).toBe('/s/t.ctl');
    expect(t).toContain("<model type='e1000'/>");
  });
});

const haveLibvirt = existsSync('/usr/sbin/libvirtd') && existsSync('/usr/bin/virsh');

describe.skipIf(!haveLibvirt)('libvirt warm start end-to-end', () => {
  let guest: TestGuest;
  let daemon: LibvirtDaemon;
  let prov: LibvirtProvisioner;
  let wp: LibvirtProvisioner | undefined;
  let startedPids: Record<string, number> = {};
  const TEMPLATE = `ciel-lvw-tmpl-${process.pid}`;
  const P = `ciel-lvw-${process.pid}`; // clone names: ${P}-...
  const imageFile = join(dir, `warm-256M-${process.pid}.save`);
  const timings: Record<string, unknown> = {};
  let image: WarmImage;
  let source: { name: string; uuid: string; mac: string };

  const spec = (name: string, container: string): VmSpec => guest.spec(name, container);
  const uuidOf = (x: string) => /<uuid>([^<]+)<\/uuid>/.exec(x)![1]!;

  beforeAll(async () => {
    guest = await ensureTestGuest();
    daemon = await LibvirtDaemon.ensure();
    startedPids = { ...daemon.started };
    await LibvirtProvisioner.defineTemplate(
      // e1000: the test guest's NIC driver (the MAC check below reads eth0 inside the guest)
      { name: TEMPLATE, disk: guest.template, kernel: guest.kernel, initrd: guest.initrd, cmdline: guest.cmdline('none'), vcpus: 1, memMiB: 256, serialLog: join(dir, `${TEMPLATE}.serial.log`), nicModel: 'e1000' },
      daemon.uri,
      dir,
    );
    prov = new LibvirtProvisioner({ template: TEMPLATE, dir, uri: daemon.uri });
    // the one warm image for every case: a booted warm-mode minimal VM, saved
    const w = await prov.acquire({ ...spec(`${P}-warm`, 'warm'), cmdline: guest.cmdline('none', { warm: true }), ready: 'CIEL-WARM-READY' });
    timings.warm_boot_ms = Math.round(w.boot_ms);
    const x = await prov.virsh('dumpxml', w.vm.name);
    source = { name: w.vm.name, uuid: uuidOf(x), mac: domainMacs(x)[0]! };
    expect(source.mac).toBe(prov.macOf(w.vm));
    const saved = await prov.saveWarmImage(w.vm, imageFile);
    timings.save_ms = Math.round(saved.save_ms);
    timings.image_bytes = saved.bytes;
    image = saved.image;
    expect(await prov.domstate(w.vm.name)).toBe('shut off'); // libvirt stops a saved domain; it stays defined
  }, 300_000);

  afterAll(async () => {
    try {
      await wp?.close();
      await prov?.close();
      await prov?.virsh('undefine', TEMPLATE).catch(() => {});
      rmSync(join(dir, `${TEMPLATE}.xml`), { force: true });
      rmSync(imageFile, { force: true });
      for (const f of ['bad-truncated.save', 'bad-stream.save']) rmSync(join(dir, f), { force: true });
    } finally {
      await daemon?.stop();
      console.log(`libvirt warm start: ${JSON.stringify(timings)}; daemons started (and stopped) by the test: ${JSON.stringify(startedPids)}`);
    }
  });

  it('restores two NEW domains from one saved image, each with its own name, UUID, MAC, files and identity', { timeout: 120_000 }, async () => {
    const a = await prov.warmStart(spec(`${P}-web-1`, 'web'), image, { ip: '10.78.0.3/24' });
    // the second through acquire(), as the Autoscaler calls it: a provisioner with the warm image
    wp = new LibvirtProvisioner({ template: TEMPLATE, dir, uri: daemon.uri, udpPortBase: 41000 + (process.pid % 1000) * 16, warm: { image, identity: () => ({ ip: '10.78.0.4/24' }) } });
    const b = await wp.acquire(spec(`${P}-web-2`, 'web'));
    expect(b).toMatchObject({ warm: true, pooled: false });
    timings.warm = [a, b].map((r) => ({ clone_ms: Math.round(r.clone_ms), boot_ms: Math.round(r.boot_ms), ...('restore_ms' in r ? { restore_ms: Math.round(r.restore_ms as number), fixup_ms: Math.round(r.fixup_ms as number), image_ms: Math.round(r.image_ms as number) } : {}) }));

    const clones: { vm: Vm; p: LibvirtProvisioner; ip: string }[] = [
      { vm: a.vm, p: prov, ip: '10.78.0.3' },
      { vm: b.vm, p: wp, ip: '10.78.0.4' },
    ];
    const seen: { name: string; uuid: string; mac: string }[] = [source];
    for (const { vm, p, ip } of clones) {
      expect(vm.state).toBe('running');
      expect(await p.domstate(vm.name)).toBe('running');
      const x = await p.virsh('dumpxml', vm.name);
      const uuid = uuidOf(x);
      const [mac] = domainMacs(x);
      // libvirt knows it under its own name and UUID, persistent
      expect((await p.virsh('domname', uuid)).trim()).toBe(vm.name);
      expect((await p.virsh('domuuid', vm.name)).trim()).toBe(uuid);
      expect(await p.virsh('dominfo', vm.name)).toMatch(/Persistent:\s+yes/);
      expect(mac).toBe(p.macOf(vm));
      for (const o of seen) {
        expect(vm.name).not.toBe(o.name);
        expect(uuid).not.toBe(o.uuid);
        expect(mac).not.toBe(o.mac);
      }
      seen.push({ name: vm.name, uuid, mac: mac! });
      // its own disk (an overlay on the template's), serial log and control socket
      expect(domainDisk(x)).toBe(vm.disk);
      expect(domainCtlSocket(x)).toBe(join(dir, `${vm.name}.ctl`));
      expect(x).toContain(`<source path='${vm.serialLog}'`);
      const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', '-U', vm.disk])).stdout) as { 'backing-filename'?: string };
      expect(info['backing-filename']).toBe(guest.template);
      // inside: eth0 carries the MAC of this domain's XML (the snapshot's was the source's), its address,
      // and only its container runs
      const g = await p.exec(vm, 'cat /sys/class/net/eth0/address; ip -4 -o addr show eth0 | awk \'{print $4}\'; ls -d /sys/fs/cgroup/*/ | xargs -n1 basename');
      expect(g.rc).toBe(0);
      expect(g.out.trim().split('\n')).toEqual([mac, `${ip}/24`, 'web']);
      const log = readFileSync(vm.serialLog, 'latin1');
      expect(log).toContain('CIEL-READY web');
      expect(log.match(/^CIEL-CONTAINERS .*$/gm)).toEqual(['CIEL-CONTAINERS web']);
      expect(log).not.toContain('CIEL-WARM-READY'); // its log starts at the restore
    }
    // pooled: the warm clone is the spec's VM now, so the same spec resumes it (not another restore)...
    await wp.release(b.vm, 'pause');
    const c = await wp.acquire(spec(`${P}-web-3`, 'web'));
    expect(c).toMatchObject({ pooled: true, reuse: 'resume' });
    expect(c.vm).toBe(b.vm);
    // ...and stopped, it boots cold as its container: its persistent definition has the spec's cmdline
    // (acquire() would rather warm-start a new one than boot it: start it directly)
    await wp.release(c.vm, 'stop');
    expect(await wp.virsh('dumpxml', '--inactive', c.vm.name)).toContain(`<cmdline>${xmlEscape(spec('x', 'web').cmdline)}</cmdline>`);
    await wp.start(c.vm);
    expect(readFileSync(c.vm.serialLog, 'latin1')).toContain('CIEL-READY web');
  });

  it('a truncated or corrupted image fails clearly and leaves nothing defined', { timeout: 60_000 }, async () => {
    const defined = async () => (await prov.virsh('list', '--all', '--name')).split('\n').filter((n) => n.startsWith(`${P}-bad`));
    // truncated: refused before anything is made
    const truncated = join(dir, 'bad-truncated.save');
    copyFileSync(image.file, truncated);
    truncateSync(truncated, Math.floor(readFileSync(truncated).length / 2));
    const e1 = await prov.warmStart(spec(`${P}-bad-1`, 'web'), { ...image, file: truncated }).catch((e: unknown) => e);
    expect(e1).toBeInstanceOf(SaveImageError);
    expect((e1 as Error).message).toMatch(/bad-truncated\.save: .*truncated/);
    expect(await defined()).toEqual([]);
    expect(existsSync(join(dir, `${P}-bad-1.qcow2`))).toBe(false);

    // corrupted inside QEMU's stream (the header is fine): QEMU refuses it, the domain is undefined again
    const corrupt = join(dir, 'bad-stream.save');
    copyFileSync(image.file, corrupt);
    patch(corrupt, readSaveImage(corrupt).streamOffset + 8, Buffer.alloc(64, 0xee));
    const e2 = await prov.warmStart(spec(`${P}-bad-2`, 'web'), { ...image, file: corrupt }).catch((e: unknown) => e);
    expect(e2).toBeInstanceOf(Error);
    expect((e2 as Error).message).toMatch(/restore of .*bad-stream\.save as a clone failed: [\s\S]*Configuration section missing/);
    expect(await defined()).toEqual([]);
    for (const ext of ['qcow2', 'serial.log', 'ctl', 'xml', 'restore']) expect(existsSync(join(dir, `${P}-bad-2.${ext}`)), ext).toBe(false);
  });
});
