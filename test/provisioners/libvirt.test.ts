// libvirt provisioner: XML editing (pure), then end-to-end against a real libvirtd
// that the test starts (virtlogd -d, libvirtd -d) and stops afterwards (only what it started).

import { existsSync, readFileSync, rmSync } from 'node:fs';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cacheDir } from '../../common/cache.ts';
import { ensureTestGuest, type TestGuest } from '../../testbed/minimal-guest.ts';
import { LibvirtDaemon } from '../../provisioners/libvirt-daemon.ts';
import { LibvirtProvisioner } from '../../provisioners/libvirt.ts';
import { domainDisk, editDomainXml, templateXml } from '../../provisioners/libvirt-xml.ts';
import type { VmSpec } from '../../provisioners/provisioner.ts';

const DUMP = `<domain type='qemu'>
  <name>ciel-tmpl</name>
  <uuid>4dbf2ae1-4acb-4c0d-8a2a-91181ac9e2a0</uuid>
  <memory unit='KiB'>524288</memory>
  <currentMemory unit='KiB'>524288</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <os>
    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>
    <kernel>/k/vmlinuz</kernel>
    <initrd>/k/initrd.gz</initrd>
    <cmdline>console=ttyS0 ciel.container=all</cmdline>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/img/template.qcow2'/>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='udp'>
      <mac address='52:54:00:aa:bb:01'/>
      <source address='127.0.0.1' port='1'>
        <local address='127.0.0.1' port='0'/>
      </source>
    </interface>
    <serial type='file'>
      <source path='/logs/tmpl.log' append='off'/>
      <target type='isa-serial' port='0'/>
    </serial>
    <console type='file'>
      <source path='/logs/tmpl.log' append='off'/>
      <target type='serial' port='0'/>
    </console>
  </devices>
</domain>
`;

describe('domain XML', () => {
  it('clone edits: name, no uuid, new MAC, disk, serial, size, cmdline, ports', () => {
    const x = editDomainXml(DUMP, {
      name: 'ciel-web-1',
      dropUuid: true,
      macs: ['52:54:00:12:34:56'],
      disk: '/clones/ciel-web-1.qcow2',
      serialLog: '/clones/ciel-web-1.log',
      vcpus: 1,
      memMiB: 256,
      cmdline: 'console=ttyS0 ciel.container=web',
      udpPorts: { local: 40000, remote: 40001 },
    });
    expect(x).toContain('<name>ciel-web-1</name>');
    expect(x).not.toContain('<uuid>');
    expect(x).toContain("<mac address='52:54:00:12:34:56'/>");
    expect(x).not.toContain('52:54:00:aa:bb:01');
    expect(domainDisk(x)).toBe('/clones/ciel-web-1.qcow2');
    expect(x).not.toContain('backingStore');
    expect(x.match(/\/clones\/ciel-web-1\.log/g)).toHaveLength(2); // serial and console
    expect(x).toContain("<vcpu placement='static'>1</vcpu>");
    expect(x).toContain("<memory unit='KiB'>262144</memory>");
    expect(x).toContain("<currentMemory unit='KiB'>262144</currentMemory>");
    expect(x).toContain('<cmdline>console=ttyS0 ciel.container=web</cmdline>');
    expect(x).toContain("<source address='127.0.0.1' port='40001'>");
    expect(x).toContain("<local address='127.0.0.1' port='40000'/>");
    expect(x).toContain('<kernel>/k/vmlinuz</kernel>');
  });
  it('escapes and refuses missing elements', () => {
    expect(editDomainXml(DUMP, { cmdline: "a<b & 'c'" })).toContain('<cmdline>a&lt;b &amp; &apos;c&apos;</cmdline>');
    expect(() => editDomainXml('<domain/>', { name: 'x' })).toThrow(/no <name>/);
    expect(domainDisk(DUMP)).toBe('/img/template.qcow2');
    expect(templateXml({ name: 't', disk: '/d', kernel: '/k', initrd: '/i', cmdline: 'c', vcpus: 1, memMiB: 128, serialLog: '/s' })).toMatch(
      /<memoryBacking>\s*<source type='file'\/>\s*<access mode='shared'\/>/,
    );
  });
});

const haveLibvirt = existsSync('/usr/sbin/libvirtd') && existsSync('/usr/bin/virsh');

describe.skipIf(!haveLibvirt)('libvirt provisioner end-to-end', () => {
  let guest: TestGuest;
  let daemon: LibvirtDaemon;
  let prov: LibvirtProvisioner;
  const dir = cacheDir('provisioner-test', 'libvirt');
  const TEMPLATE = `ciel-test-tmpl-${process.pid}`;
  const timings: Record<string, number> = {};
  let startedPids: Record<string, number> = {};

  const spec = (name: string, container: string): VmSpec => guest.spec(name, container);

  beforeAll(async () => {
    guest = await ensureTestGuest();
    const t0 = performance.now();
    daemon = await LibvirtDaemon.ensure();
    startedPids = { ...daemon.started };
    timings.daemon_start_ms = Math.round(performance.now() - t0);
    await LibvirtProvisioner.defineTemplate(
      {
        name: TEMPLATE,
        disk: guest.template,
        kernel: guest.kernel,
        initrd: guest.initrd,
        cmdline: guest.cmdline('template'),
        vcpus: 2,
        memMiB: 512,
        serialLog: `${dir}/${TEMPLATE}.log`,
      },
      daemon.uri,
      dir,
    );
    prov = new LibvirtProvisioner({ template: TEMPLATE, dir, uri: daemon.uri });
  });

  afterAll(async () => {
    try {
      await prov?.close();
      await prov?.virsh('undefine', TEMPLATE).catch(() => {});
    } finally {
      await daemon?.stop();
      console.log(`libvirt timings (ms): ${JSON.stringify(timings)}; daemons started (and stopped) by the test: ${JSON.stringify(startedPids)}`);
    }
  });

  it('clones the template domain, boots to CIEL-READY, pools (suspend) and reuses', { timeout: 240_000 }, async () => {
    const a = await prov.acquire(spec('ciel-lv-web-1', 'web'));
    timings.clone_ms = Math.round(a.clone_ms);
    timings.boot_ms = Math.round(a.boot_ms);
    expect(a.pooled).toBe(false);
    expect(readFileSync(a.vm.serialLog, 'latin1')).toContain('CIEL-READY web');
    // the clone: its own name, uuid, MAC, disk (overlay on the template disk), size, cmdline
    const xml = await prov.virsh('dumpxml', '--inactive', a.vm.name);
    const txml = await prov.virsh('dumpxml', '--inactive', TEMPLATE);
    const uuid = (s: string) => /<uuid>([^<]+)<\/uuid>/.exec(s)![1];
    const mac = (s: string) => /<mac address='([^']+)'/.exec(s)![1];
    expect(uuid(xml)).not.toBe(uuid(txml));
    expect(mac(xml)).not.toBe(mac(txml));
    expect(xml).toContain("<vcpu placement='static'>1</vcpu>");
    expect(xml).toContain("<memory unit='KiB'>262144</memory>");
    expect(xml).toContain('ciel.container=web');
    expect(domainDisk(xml)).toBe(a.vm.disk);
    const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', '-U', a.vm.disk])).stdout) as { 'backing-filename'?: string };
    expect(info['backing-filename']).toBe(guest.template);
    expect(a.vm.pid).toBeGreaterThan(0);
    expect(a.vm.ramFile && existsSync(a.vm.ramFile)).toBe(true);

    // VM-level monitoring through domstats
    const s = await prov.vmStats(a.vm);
    expect(s.vm).toBe('ciel-lv-web-1');
    expect(s.vcpus).toBe(1);
    expect(s.cpu_time_ns).toBeGreaterThan(1e9);
    expect(s.memory_total_bytes).toBe(256 * 1024 * 1024);

    // pool: suspend, then the next acquire for the same container resumes it
    await prov.release(a.vm, 'pause');
    expect(await prov.domstate(a.vm.name)).toBe('paused');
    const b = await prov.acquire(spec('ciel-lv-web-2', 'web'));
    expect(b).toMatchObject({ pooled: true, reuse: 'resume', clone_ms: 0 });
    expect(b.vm).toBe(a.vm);
    expect(await prov.domstate(b.vm.name)).toBe('running');
    timings.pool_resume_ms = Math.round(b.boot_ms);

    // pool: stopped (destroyed, still defined), reused for another container after a redefine
    await prov.release(b.vm, 'stop');
    expect(await prov.domstate(b.vm.name)).toBe('shut off');
    const c = await prov.acquire(spec('ciel-lv-api-1', 'api'));
    expect(c).toMatchObject({ pooled: true, reuse: 'boot', clone_ms: 0 });
    expect(readFileSync(c.vm.serialLog, 'latin1')).toContain('CIEL-READY api');
    timings.pool_boot_ms = Math.round(c.boot_ms);
    await prov.destroy(c.vm);
    await expect(prov.domstate(c.vm.name)).rejects.toThrow();
  });

  it("after the controller's crash, a new provisioner adopts a running domain (same QEMU) and reaps an orphan", { timeout: 240_000 }, async () => {
    // what an earlier process left: a running replica and a paused one, then "crashed" (never closed)
    const earlier = new LibvirtProvisioner({ template: TEMPLATE, dir, uri: daemon.uri });
    const run = await earlier.acquire(spec('ciel-lv-x-web-1', 'web'));
    const orphan = await earlier.acquire(spec('ciel-lv-x-db-2', 'db'));
    await earlier.release(orphan.vm, 'pause');
    const pid = run.vm.pid;
    expect(pid).toBeGreaterThan(0);

    const later = new LibvirtProvisioner({ template: TEMPLATE, dir, uri: daemon.uri });
    expect([...later.leftovers('ciel-lv-x-')].sort()).toEqual(['ciel-lv-x-db-2', 'ciel-lv-x-web-1']);
    // the record as the state kept it (paths and process come from libvirt, not from the record)
    const rec = { name: 'ciel-lv-x-web-1', spec: run.vm.spec, state: 'running' as const, disk: '', serialLog: '' };
    expect(await later.adopt(rec, false)).toBe(true);
    expect(rec).toMatchObject({ state: 'running', pid, disk: run.vm.disk, ramFile: run.vm.ramFile });
    expect(await later.exec(rec, 'echo adopted')).toMatchObject({ out: 'adopted\n' });
    // a domain that is not there is not adopted
    expect(await later.adopt({ ...rec, name: 'ciel-lv-x-none-9' }, false)).toBe(false);
    // the orphan: domain, disk, log and XML gone
    await later.reap('ciel-lv-x-db-2');
    await expect(later.domstate('ciel-lv-x-db-2')).rejects.toThrow();
    expect([...later.leftovers('ciel-lv-x-')]).toEqual(['ciel-lv-x-web-1']);
    expect(existsSync(orphan.vm.disk)).toBe(false);
    await later.close();
    expect([...later.leftovers('ciel-lv-x-')]).toEqual([]);
  });

  it('cleans up: no domains left, stops exactly the daemons it started', { timeout: 60_000 }, async () => {
    await prov.close();
    await prov.virsh('undefine', TEMPLATE);
    rmSync(`${dir}/${TEMPLATE}.xml`, { force: true });
    const names = (await prov.virsh('list', '--all', '--name')).split('\n').filter((n) => n.startsWith('ciel-lv-') || n === TEMPLATE);
    expect(names).toEqual([]);
    const started = { ...daemon.started };
    await daemon.stop();
    for (const pid of Object.values(started)) {
      const st = existsSync(`/proc/${pid}/stat`) ? readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]![0] : 'gone';
      expect(['gone', 'Z', 'X']).toContain(st); // exited (a zombie until its parent reaps it)
    }
    expect(daemon.started).toEqual({});
  });
});
