// Offline edits a systemd + Docker guest needs, on a small ext4 image made here (no VM): symlinks to enable
// units (systemd 252 ignores plain files in *.wants/), drop-ins, daemon.json merged, the network identity
// file, restart policies; and hostile JSON on the disk is a BadInputError naming the file.
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { BadInputError } from '../../common/errors.ts';
import { editDisk, editDockerGuest, systemdDropIn, systemdWantsLink } from '../../provisioners/disk-edit.ts';
import { journalOnlyChange } from '../fixtures/ext4-journal.ts';

const tmp = mkdtempSync(join(tmpdir(), 'ciel-disk-edit-systemd-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const ids = { web: 'a'.repeat(64), db: 'b'.repeat(64), batch: 'c'.repeat(64) };

async function image(name: string, opts: { badJson?: boolean } = {}): Promise<string> {
  const root = join(tmp, `${name}-root`);
  for (const [n, id] of Object.entries(ids)) {
    const d = join(root, 'var/lib/docker/containers', id);
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'config.v2.json'), opts.badJson && n === 'db' ? '{"Name": "/db",' : JSON.stringify({ ID: id, Name: `/${n}` }));
    writeFileSync(join(d, 'hostconfig.json'), JSON.stringify({ NetworkMode: 'bridge', RestartPolicy: { Name: 'always', MaximumRetryCount: 0 } }));
  }
  mkdirSync(join(root, 'etc/docker'), { recursive: true });
  writeFileSync(join(root, 'etc/docker/daemon.json'), JSON.stringify({ 'log-driver': 'json-file' }));
  mkdirSync(join(root, 'etc/systemd/system/multi-user.target.wants'), { recursive: true });
  symlinkSync('/lib/systemd/system/docker.service', join(root, 'etc/systemd/system/multi-user.target.wants/docker.service'));
  const img = join(tmp, `${name}.raw`);
  await execa('mkfs.ext4', ['-q', '-F', '-b', '4096', '-d', root, img, '32M']);
  return img;
}

describe('offline edits for systemd + Docker guests', () => {
  it('restart policies, network file, a wants symlink, a drop-in and daemon.json in one edit; e2fsck clean', { timeout: 60_000 }, async () => {
    const img = await image('ok');
    const net = '[Match]\nName=eth0\n\n[Network]\nAddress=10.0.2.16/24\n';
    const r = await editDockerGuest(img, {
      keep: ['web'],
      files: [{ path: '/etc/systemd/network/10-eth0.network', content: net }, systemdDropIn('docker.service', 'ciel', '[Service]\nTimeoutStartSec=300\n')],
      links: [systemdWantsLink('systemd-networkd.service', 'multi-user.target'), { path: '/etc/systemd/system/multi-user.target.wants/a-unit-with-a-long-name-that-needs-a-data-block-for-its-target-path.service', target: `/lib/systemd/system/${'x'.repeat(80)}.service` }],
      daemon: { 'exec-opts': ['native.cgroupdriver=cgroupfs'] },
    });
    expect(r.result.map((c) => [c.name, c.to]).sort()).toEqual([['batch', 'no'], ['db', 'no'], ['web', 'always']]);
    const read = await editDisk(img, async (ed) => ({
      net: (await ed.readFile('/etc/systemd/network/10-eth0.network'))?.toString(),
      dropIn: (await ed.readFile('/etc/systemd/system/docker.service.d/ciel.conf'))?.toString(),
      link: await ed.readLink('/etc/systemd/system/multi-user.target.wants/systemd-networkd.service'),
      longLink: await ed.readLink('/etc/systemd/system/multi-user.target.wants/a-unit-with-a-long-name-that-needs-a-data-block-for-its-target-path.service'),
      oldLink: await ed.readLink('/etc/systemd/system/multi-user.target.wants/docker.service'),
      notLink: await ed.readLink('/etc/docker/daemon.json'),
      daemon: JSON.parse((await ed.readFile('/etc/docker/daemon.json'))!.toString()),
      web: JSON.parse((await ed.readFile(`/var/lib/docker/containers/${ids.web}/hostconfig.json`))!.toString()),
      db: JSON.parse((await ed.readFile(`/var/lib/docker/containers/${ids.db}/hostconfig.json`))!.toString()),
    }));
    expect(read.result).toEqual({
      net,
      dropIn: '[Service]\nTimeoutStartSec=300\n',
      link: '/lib/systemd/system/systemd-networkd.service',
      longLink: `/lib/systemd/system/${'x'.repeat(80)}.service`,
      oldLink: '/lib/systemd/system/docker.service',
      notLink: null,
      daemon: { 'log-driver': 'json-file', 'exec-opts': ['native.cgroupdriver=cgroupfs'] },
      web: { NetworkMode: 'bridge', RestartPolicy: { Name: 'always', MaximumRetryCount: 0 } },
      db: { NetworkMode: 'bridge', RestartPolicy: { Name: 'no', MaximumRetryCount: 0 } },
    });
    await execa('e2fsck', ['-fn', img]);
  });

  it('a truncated config.v2.json on the guest disk is a BadInputError naming the file', { timeout: 60_000 }, async () => {
    const img = await image('bad', { badJson: true });
    const err = await editDockerGuest(img, { keep: ['web'] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BadInputError);
    expect(String((err as Error).message)).toContain(`${ids.db}/config.v2.json`);
  });

  // A VM killed rather than shut down leaves changes in its journal; editing in place without replaying it
  // would be undone by the guest's own replay at the next mount. Here dockerd's last change (db's restart
  // policy set to on-failure) is only in the journal (test/fixtures/ext4-journal.ts).
  it('a filesystem whose journal holds changes (VM killed) is replayed first: the edit sees and keeps them', { timeout: 60_000 }, async () => {
    const clean = await image('killed-base');
    const img = join(tmp, 'killed.raw');
    const host = join(tmp, 'db-hostconfig.json');
    writeFileSync(host, JSON.stringify({ NetworkMode: 'bridge', RestartPolicy: { Name: 'on-failure', MaximumRetryCount: 3 } }));
    const path = `/var/lib/docker/containers/${ids.db}/hostconfig.json`;
    journalOnlyChange(clean, img, [`rm ${path}`, `write ${host} ${path}`]);
    const r = await editDockerGuest(img, { keep: ['web'] });
    expect(r.result.map((p) => [p.name, p.from, p.to]).sort()).toEqual([
      ['batch', 'always', 'no'],
      ['db', 'on-failure', 'no'],
      ['web', 'always', 'always'],
    ]);
    expect((await execa('dumpe2fs', ['-h', img])).stdout).not.toMatch(/needs_recovery/);
    expect((await execa('e2fsck', ['-fn', img], { reject: false })).exitCode).toBe(0);
    // what a replay at the guest's next mount would do now: nothing (the journal is empty), so the edit stays
    const after = await editDisk(img, async (ed) => JSON.parse((await ed.readFile(path))!.toString()));
    expect(after.result).toEqual({ NetworkMode: 'bridge', RestartPolicy: { Name: 'no', MaximumRetryCount: 0 } });
  });

  it('a journal that cannot be replayed is refused before any write', { timeout: 60_000 }, async () => {
    const img = await image('dirty');
    // needs_recovery set, and the journal's own superblock (its first block) zeroed
    await execa('debugfs', ['-w', '-R', 'feature needs_recovery', img]);
    const first = Number((await execa('debugfs', ['-R', 'bmap <8> 0', img])).stdout.trim());
    expect(first).toBeGreaterThan(0);
    await execa('dd', ['if=/dev/zero', `of=${img}`, 'bs=4096', `seek=${first}`, 'count=1', 'conv=notrunc', 'status=none']);
    const err = await editDockerGuest(img, { keep: ['web'] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BadInputError);
    expect(String((err as Error).message)).toMatch(/journal needs recovery .* replaying it failed \(journal_run: /);
    // nothing was written, and the refusal holds for the next edit too
    const host = (await execa('debugfs', ['-c', '-R', `cat /var/lib/docker/containers/${ids.db}/hostconfig.json`, img])).stdout;
    expect(JSON.parse(host).RestartPolicy.Name).toBe('always');
    await expect(editDockerGuest(img, { keep: ['web'] })).rejects.toThrow(/replaying it failed/);
  });

  it('unit and drop-in names are checked before anything is written', () => {
    expect(() => systemdWantsLink('../x.service', 'multi-user.target')).toThrow(BadInputError);
    expect(() => systemdDropIn('docker.service', 'a/b', '')).toThrow(BadInputError);
  });
});
