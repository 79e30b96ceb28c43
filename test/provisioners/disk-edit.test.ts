// Offline disk edits before boot: write the container selection into a clone's qcow2 overlay through
// qemu-storage-daemon's writable FUSE export (and through the convert fallback), leaving the template
// untouched; rewrite Docker restart policies (hostconfig.json) in a raw ext4 image; and boot a clone of
// the template whose disk enables only `db` (the template installs web, db, batch): only db starts, with
// the address the disk gave it.

import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cacheDir } from '../../common/cache.ts';
import { L2Segment } from '../../testbed/lb/netns.ts';
import { editDisk, selectContainers, setDockerRestartPolicies } from '../../provisioners/disk-edit.ts';
import { ensureTestGuest, type TestGuest } from '../../testbed/minimal-guest.ts';
import { QemuDirectProvisioner } from '../../provisioners/qemu-direct.ts';

const dir = cacheDir('provisioner-test', 'disk-edit');
let guest: TestGuest;
const timings: Record<string, number | string> = {};
const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');

beforeAll(async () => {
  guest = await ensureTestGuest();
});

afterAll(() => {
  console.log(`disk-edit: ${JSON.stringify(timings)}`);
});

describe('offline disk edits', () => {
  for (const method of ['fuse', 'convert'] as const) {
    it(`writes the container selection into a qcow2 overlay (${method}); the template is untouched`, { timeout: 60_000 }, async () => {
      const overlay = join(dir, `ov-${method}.qcow2`);
      rmSync(overlay, { force: true });
      await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', guest.template, '-F', 'qcow2', overlay]);
      const before = sha(guest.template);
      const r = await selectContainers(overlay, { containers: ['db'], ip: '10.77.0.7/24', vip: '10.77.0.100' }, { method });
      timings[`${method}_ms`] = Math.round(r.ms);
      expect(r.method).toBe(method);
      expect(sha(guest.template)).toBe(before);
      const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', overlay])).stdout) as { 'backing-filename'?: string };
      expect(info['backing-filename']).toBe(guest.template);
      await execa('qemu-img', ['check', '-q', overlay]);
      const read = await editDisk(overlay, async (ed) => ({
        enabled: (await ed.readFile('/etc/ciel/containers.enabled'))?.toString(),
        net: (await ed.readFile('/etc/ciel/net'))?.toString(),
        installed: (await ed.readFile('/etc/ciel/containers.installed'))?.toString(),
      }));
      expect(read.result).toEqual({ enabled: 'db\n', net: 'ip=10.77.0.7/24\nvip=10.77.0.100\n', installed: 'web\ndb\nbatch\n' });
      // the filesystem is consistent after the edit
      const raw = join(dir, `ov-${method}.raw`);
      await execa('qemu-img', ['convert', '-O', 'raw', overlay, raw]);
      await execa('e2fsck', ['-fn', raw]);
      rmSync(raw, { force: true });
      rmSync(overlay, { force: true });
    });
  }

  it('Docker guests: only the needed container keeps a restart policy (hostconfig.json)', { timeout: 60_000 }, async () => {
    const root = join(dir, 'docker-root');
    rmSync(root, { recursive: true, force: true });
    const ids = { web: 'a'.repeat(64), db: 'b'.repeat(64), batch: 'c'.repeat(64) };
    for (const [name, id] of Object.entries(ids)) {
      const d = join(root, 'var/lib/docker/containers', id);
      mkdirSync(d, { recursive: true });
      writeFileSync(join(d, 'config.v2.json'), JSON.stringify({ ID: id, Name: `/${name}` }));
      writeFileSync(join(d, 'hostconfig.json'), JSON.stringify({ NetworkMode: 'bridge', RestartPolicy: { Name: 'always', MaximumRetryCount: 0 } }));
    }
    const img = join(dir, 'docker.raw');
    rmSync(img, { force: true });
    await execa('mkfs.ext4', ['-q', '-F', '-d', root, img, '32M']);
    const r = await editDisk(img, (ed) => setDockerRestartPolicies(ed, ['/web']));
    expect(r.method).toBe('raw');
    expect(r.result.map((c) => [c.name, c.from, c.to]).sort()).toEqual([
      ['batch', 'always', 'no'],
      ['db', 'always', 'no'],
      ['web', 'always', 'always'],
    ]);
    const after = await editDisk(img, async (ed) => {
      const o: Record<string, unknown> = {};
      for (const [name, id] of Object.entries(ids)) o[name] = JSON.parse((await ed.readFile(`/var/lib/docker/containers/${id}/hostconfig.json`))!.toString());
      return o;
    });
    expect(after.result).toEqual({
      web: { NetworkMode: 'bridge', RestartPolicy: { Name: 'always', MaximumRetryCount: 0 } },
      db: { NetworkMode: 'bridge', RestartPolicy: { Name: 'no', MaximumRetryCount: 0 } },
      batch: { NetworkMode: 'bridge', RestartPolicy: { Name: 'no', MaximumRetryCount: 0 } },
    });
    await execa('e2fsck', ['-fn', img]);
    rmSync(img, { force: true });
    rmSync(root, { recursive: true, force: true });
  });

  it('a clone whose disk enables only db boots only db, with the address from the disk', { timeout: 240_000 }, async () => {
    const net = new L2Segment({ dir, ns: `ciel-de-${process.pid}` });
    await net.create();
    const prov = new QemuDirectProvisioner({
      template: guest.template,
      dir,
      wrapper: net.wrapper,
      extraArgs: (vm, mac) => net.nicArgs(vm, mac),
      // the edit happens in acquire(), after the clone and before the boot
      beforeBoot: async (vm) => {
        const r = await selectContainers(vm.disk, { containers: [vm.spec.container], ip: '10.77.0.9/24' });
        timings.before_boot_edit_ms = Math.round(r.ms);
      },
    });
    try {
      const a = await prov.acquire({
        name: 'ciel-de-db',
        container: 'db',
        vcpus: 1,
        memMiB: 192,
        kernel: guest.kernel,
        initrd: guest.initrd,
        // the command line still names web (as a template clone's would): the disk wins
        cmdline: guest.cmdline('web'),
        disk: 'overlay',
      });
      timings.clone_plus_edit_ms = Math.round(a.clone_ms);
      timings.boot_ms = Math.round(a.boot_ms);
      const log = readFileSync(a.vm.serialLog, 'latin1');
      expect(log).toContain('CIEL-CONTAINERS db');
      expect(log).not.toContain('CIEL-READY web');
      const cg = (await prov.exec(a.vm, 'cd /sys/fs/cgroup && for d in web db batch; do [ -d $d ] && echo "$d $(wc -l < $d/cgroup.procs)"; done; true')).out;
      const groups = cg.trim().split('\n');
      expect(groups).toHaveLength(1);
      expect(groups[0]).toMatch(/^db [1-9]\d*$/); // db's cgroup holds its processes; web and batch do not exist
      const body = (await net.exec('curl', ['-s', '--max-time', '10', '--retry', '3', 'http://10.77.0.9/'])).stdout.trim();
      expect(body).toBe('db 10.77.0.9');
    } finally {
      await prov.close();
      await net.destroy();
    }
  });
});
