// Container names from real ext4 images built with mkfs.ext4 -d: raw, qcow2, MBR, MBR logical, GPT.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BadInputError } from '../../common/errors.ts';
import { DockerDiskNames, applyNames, detectFormat, parseDockerConfig, readDockerNames } from '../../disk/docker-disk.ts';
import { findExtFilesystems } from '../../disk/partitions.ts';
import { journalOnlyChange } from '../fixtures/ext4-journal.ts';

const have = (tool: string) => {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};
const TOOLS = have('mkfs.ext4') && have('debugfs') && have('qemu-img');
const FUSE = have('qemu-storage-daemon') && (() => {
  try {
    statSync('/dev/fuse');
    return true;
  } catch {
    return false;
  }
})();

const IDS = ['1', '2', '3'].map((d) => d.repeat(12) + 'a'.repeat(52));
const EXPECTED = new Map([
  [IDS[0], { id: IDS[0], name: 'web', image: 'nginx:1.25' }],
  [IDS[1], { id: IDS[1], name: 'db', image: 'postgres:16-alpine' }],
  [IDS[2], { id: IDS[2], name: 'cache', image: 'redis@sha256:' + 'e'.repeat(64) }],
]);
const MiB = 1 << 20;

let dir: string;
const img = (n: string) => join(dir, n);
const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');

function mkfs(out: string, root: string, sizeMiB: number) {
  execFileSync('mkfs.ext4', ['-q', '-F', '-d', root, '-L', 'guestroot', out, `${sizeMiB}M`]);
}

/** write `fsImage` into a new disk at byteOffset */
function embed(out: string, fsImage: string, byteOffset: number, totalBytes: number, headers: [number, Buffer][]) {
  const fd = openSync(out, 'w');
  const data = readFileSync(fsImage);
  writeSync(fd, data, 0, data.length, byteOffset);
  for (const [pos, b] of headers) writeSync(fd, b, 0, b.length, pos);
  closeSync(fd);
  execFileSync('truncate', ['-s', String(totalBytes), out]);
}

function mbrEntry(b: Buffer, i: number, type: number, startLba: number, sectors: number) {
  const o = 446 + 16 * i;
  b[o + 4] = type;
  b.writeUInt32LE(startLba, o + 8);
  b.writeUInt32LE(sectors, o + 12);
  b[510] = 0x55;
  b[511] = 0xaa;
}

beforeAll(() => {
  if (!TOOLS) return;
  dir = mkdtempSync(join(tmpdir(), 'ciel-names-test-'));
  const root = join(dir, 'root');
  for (const [id, e] of EXPECTED) {
    const d = join(root, 'var/lib/docker/containers', id);
    mkdirSync(d, { recursive: true });
    writeFileSync(
      join(d, 'config.v2.json'),
      JSON.stringify({ ID: id, Name: `/${e.name}`, Created: '2026-11-22T08:00:00Z', Config: { Image: e.image, Hostname: id.slice(0, 12) }, State: { Running: true } }),
    );
    writeFileSync(join(d, 'hostconfig.json'), '{}');
  }
  // noise the reader must ignore: a non-id directory, a non-directory, an id dir without config
  mkdirSync(join(root, 'var/lib/docker/containers/not-a-container'));
  writeFileSync(join(root, 'var/lib/docker/containers', 'f'.repeat(64)), 'x');
  mkdirSync(join(root, 'var/lib/docker/containers', '9'.repeat(64)));
  mkdirSync(join(root, 'etc'));
  writeFileSync(join(root, 'etc/hostname'), 'guest\n');

  const fs = img('fs.img');
  mkfs(fs, root, 32);
  execFileSync('cp', ['--sparse=always', fs, img('raw.img')]);
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', fs, img('disk.qcow2')]);

  // MBR: partition 1 = 1 MiB of something else (FAT type, zeros), partition 2 = ext4 at 2 MiB
  const mbr = Buffer.alloc(512);
  mbrEntry(mbr, 0, 0x0c, 2048, 2048);
  mbrEntry(mbr, 1, 0x83, 4096, 32 * 2048);
  embed(img('mbr.img'), fs, 2 * MiB, 36 * MiB, [[0, mbr]]);
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', img('mbr.img'), img('mbr.qcow2')]);

  // MBR with an extended partition: ext4 as logical partition 5 (EBR at LBA 2048, data 2048 further)
  const mbr2 = Buffer.alloc(512);
  mbrEntry(mbr2, 0, 0x05, 2048, 40 * 2048);
  const ebr = Buffer.alloc(512);
  mbrEntry(ebr, 0, 0x83, 2048, 32 * 2048);
  embed(img('logical.img'), fs, 2 * MiB, 44 * MiB, [[0, mbr2], [2048 * 512, ebr]]);

  // GPT: protective MBR, header at LBA 1, entries at LBA 2; ext4 is partition 2 at LBA 8192
  const pmbr = Buffer.alloc(512);
  mbrEntry(pmbr, 0, 0xee, 1, 0xffffffff);
  const hdr = Buffer.alloc(92);
  hdr.write('EFI PART', 0, 'latin1');
  hdr.writeUInt32LE(0x00010000, 8);
  hdr.writeUInt32LE(92, 12);
  hdr.writeBigUInt64LE(1n, 24);
  hdr.writeBigUInt64LE(2n, 72);
  hdr.writeUInt32LE(128, 80);
  hdr.writeUInt32LE(128, 84);
  const entries = Buffer.alloc(128 * 128);
  const linuxFs = Buffer.from('af3dc60f838472478e793d69d8477de4', 'hex');
  linuxFs.copy(entries, 0); // partition 1: empty space 1..2 MiB
  entries.writeBigUInt64LE(2048n, 32);
  entries.writeBigUInt64LE(4095n, 40);
  linuxFs.copy(entries, 128);
  entries.writeBigUInt64LE(8192n, 128 + 32);
  entries.writeBigUInt64LE(8192n + 32n * 2048n - 1n, 128 + 40);
  embed(img('gpt.img'), fs, 8192 * 512, 44 * MiB, [[0, pmbr], [512, hdr], [1024, entries]]);

  // corrupt: random bytes; an ext4 whose group descriptors and inode table are overwritten; a damaged qcow2
  writeFileSync(img('random.img'), Buffer.from(Array.from({ length: 4 * MiB }, (_x, i) => (i * 2654435761) >>> 24)));
  const broken = readFileSync(fs);
  broken.fill(0xa5, 2048, 2 * MiB);
  writeFileSync(img('broken-fs.img'), broken);
  const q = readFileSync(img('disk.qcow2'));
  q.fill(0xff, 4, 512); // keeps the magic, destroys version, cluster bits, sizes, table offsets
  writeFileSync(img('broken.qcow2'), q);
  // no ext at all, but a valid MBR with a partition of zeros
  const empty = Buffer.alloc(512);
  mbrEntry(empty, 0, 0x83, 2048, 2048);
  const nofs = Buffer.alloc(4 * MiB);
  empty.copy(nofs, 0);
  writeFileSync(img('nofs.img'), nofs);
  // a disk without Docker
  mkdirSync(join(dir, 'plain/etc'), { recursive: true });
  mkfs(img('nodocker.img'), join(dir, 'plain'), 8);
}, 120_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!TOOLS)('container names from a guest disk', () => {
  it('parses config.v2.json', () => {
    expect(parseDockerConfig(IDS[0], JSON.stringify({ ID: IDS[0], Name: '/x', Config: { Image: 'i' } }))).toEqual({ id: IDS[0], name: 'x', image: 'i' });
    expect(parseDockerConfig(IDS[0], JSON.stringify({ Name: '/x' }))).toEqual({ id: IDS[0], name: 'x', image: '' });
    expect(parseDockerConfig(IDS[0], JSON.stringify({ ID: IDS[1], Name: '/x' }))).toBeNull();
    expect(parseDockerConfig(IDS[0], '{"Name": 5}')).toBeNull();
    expect(parseDockerConfig(IDS[0], 'not json')).toBeNull();
  });

  it('puts the names into a sample for the live view', () => {
    const base = { cgroup: '/x', cpu_usage_ns: 0, memory_usage_bytes: 0, memory_rss_bytes: 0, memory_cache_bytes: 0, io_read_bytes: 0, io_write_bytes: 0, net_rx_bytes: 0, net_tx_bytes: 0, pids: 0 };
    const s = { time: 't', kernel: 'k', sample_us: 1, containers: [{ ...base, id: IDS[0] }, { ...base, id: IDS[1], name: 'given' }, { ...base, id: 'init.scope' }] };
    const out = applyNames(s, EXPECTED);
    expect(out.containers.map((c) => c.name)).toEqual(['web', 'given', undefined]);
    expect(s.containers[0]).not.toHaveProperty('name'); // the input is not changed
  });

  it('finds the filesystem in raw, MBR, logical and GPT disks', async () => {
    expect(await findExtFilesystems(img('raw.img'))).toEqual([{ offset: 0, where: 'whole disk', size: 32 * MiB, label: 'guestroot' }]);
    expect(await findExtFilesystems(img('mbr.img'))).toEqual([{ offset: 2 * MiB, where: 'MBR partition 2', size: 32 * MiB, label: 'guestroot' }]);
    expect(await findExtFilesystems(img('logical.img'))).toEqual([{ offset: 2 * MiB, where: 'MBR logical partition 5', size: 32 * MiB, label: 'guestroot' }]);
    expect(await findExtFilesystems(img('gpt.img'))).toEqual([{ offset: 4 * MiB, where: 'GPT partition 2', size: 32 * MiB, label: 'guestroot' }]);
    await expect(findExtFilesystems(img('nofs.img'))).rejects.toThrow(
      `${img('nofs.img')}: no ext2/3/4 filesystem found (looked at: whole disk, MBR partition 1; LVM, LUKS, btrfs and xfs are not supported)`,
    );
  });

  for (const name of ['raw.img', 'mbr.img', 'logical.img', 'gpt.img']) {
    it(`reads names and images from ${name}, read-only`, async () => {
      const before = sha(img(name));
      const mtime = statSync(img(name)).mtimeMs;
      expect(await readDockerNames(img(name))).toEqual(EXPECTED);
      expect(sha(img(name))).toBe(before);
      expect(statSync(img(name)).mtimeMs).toBe(mtime);
    });
  }

  it.skipIf(!FUSE)('reads qcow2 (plain and partitioned) through a read-only FUSE view, and unmounts it', async () => {
    for (const name of ['disk.qcow2', 'mbr.qcow2']) {
      expect(await detectFormat(img(name))).toBe('qcow2');
      const before = sha(img(name));
      expect(await readDockerNames(img(name))).toEqual(EXPECTED);
      expect(sha(img(name))).toBe(before);
    }
    const mounts = readFileSync('/proc/self/mounts', 'utf8');
    expect(mounts).not.toMatch(/ciel-disk-/);
  });

  it('reads Docker labels and hostconfig.json limits with the names; an absurd or odd hostconfig costs only the limits', async () => {
    const root = join(dir, 'spec-root');
    const ids = ['4', '5', '6', '7'].map((d) => d.repeat(64));
    const put = (id: string, name: string, host?: string | 'dir') => {
      const d = join(root, 'var/lib/docker/containers', id);
      mkdirSync(d, { recursive: true });
      writeFileSync(join(d, 'config.v2.json'), JSON.stringify({ ID: id, Name: `/${name}`, Config: { Image: 'nginx:1.25', Labels: { 'com.example.tier': name } } }));
      if (host === 'dir') mkdirSync(join(d, 'hostconfig.json'));
      else if (host !== undefined) writeFileSync(join(d, 'hostconfig.json'), host);
    };
    put(ids[0], 'limited', JSON.stringify({ Memory: 268_435_456, MemorySwap: -1, CpuShares: 512, NanoCpus: 500_000_000 }));
    put(ids[1], 'huge', JSON.stringify({ Memory: 1, pad: 'x'.repeat(1 << 20) })); // over 1 MiB: not read
    put(ids[2], 'dirhost', 'dir');
    put(ids[3], 'nohost');
    const f = img('spec.img');
    mkfs(f, root, 16);
    const got = await readDockerNames(f);
    expect(got.get(ids[0])).toEqual({
      id: ids[0],
      name: 'limited',
      image: 'nginx:1.25',
      labels: { 'com.example.tier': 'limited' },
      limits: { memoryBytes: 268_435_456, memorySwapBytes: 0, memoryReservationBytes: 0, cpuShares: 512, cpuPeriodUs: 100_000, cpuQuotaUs: 50_000 },
    });
    for (const [i, name] of [[1, 'huge'], [2, 'dirhost'], [3, 'nohost']] as const)
      expect(got.get(ids[i])).toEqual({ id: ids[i], name, image: 'nginx:1.25', labels: { 'com.example.tier': name } });
  });

  it('reads qcow2 by converting to a temp raw file when FUSE is not wanted', async () => {
    expect(await readDockerNames(img('mbr.qcow2'), { qcow2Method: 'convert' })).toEqual(EXPECTED);
  });

  // A running guest's newest files are in its ext4 journal before they are in place (a probe on the real
  // Docker guest saw db's name gone for 8 s after boot, when dockerd rewrote its config.v2.json). The fixture
  // (test/fixtures/ext4-journal.ts) is that state: a container's directory and config.v2.json in the journal only.
  it('a container whose files are only in the ext4 journal is named (the journal is replayed into a private layer, the image is not written)', async () => {
    const base = img('journal-base.img');
    const root = join(dir, 'journal-root');
    mkdirSync(join(root, 'var/lib/docker/containers'), { recursive: true });
    execFileSync('mkfs.ext4', ['-q', '-F', '-b', '4096', '-d', root, base, '32M']);
    const id = '9'.repeat(64);
    const cfg = img('late.json');
    writeFileSync(cfg, JSON.stringify({ ID: id, Name: '/late', Config: { Image: 'ciel/web:1' } }));
    const f = img('journal.img');
    const changed = journalOnlyChange(base, f, [`mkdir /var/lib/docker/containers/${id}`, `write ${cfg} /var/lib/docker/containers/${id}/config.v2.json`]);
    expect(changed.length).toBeGreaterThan(2); // directory, inode table, data (and bitmaps)
    expect(execFileSync('dumpe2fs', ['-h', f], { stdio: ['ignore', 'pipe', 'ignore'] }).toString()).toMatch(/features:.*needs_recovery/);
    const want = new Map([[id, { id, name: 'late', image: 'ciel/web:1' }]]);
    const before = sha(f);
    // as it is on disk, the container does not exist yet
    expect(await readDockerNames(f, { replayJournal: false })).toEqual(new Map());
    const q = img('journal.qcow2');
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', f, q]);
    const beforeQ = sha(q);
    const ways: [string, Parameters<typeof readDockerNames>[1]][] = [['raw', {}], ['qcow2', { qcow2Method: 'convert' }]];
    if (FUSE) ways.push(['qcow2', { qcow2Method: 'fuse' }]);
    for (const [fmt, o] of ways) expect(await readDockerNames(fmt === 'raw' ? f : q, o), `${fmt} ${JSON.stringify(o)}`).toEqual(FUSE || fmt === 'qcow2' ? want : new Map());
    expect(sha(f)).toBe(before);
    expect(sha(q)).toBe(beforeQ);
    expect(readFileSync('/proc/self/mounts', 'utf8')).not.toMatch(/ciel-disk-/);
  });

  it('a disk without Docker has no names, no error', async () => {
    expect(await readDockerNames(img('nodocker.img'))).toEqual(new Map());
  });

  it('corrupt images give a clear BadInputError, no crash', async () => {
    await expect(readDockerNames(img('random.img'))).rejects.toThrow(BadInputError);
    await expect(readDockerNames(img('random.img'))).rejects.toThrow(/random\.img: no ext2\/3\/4 filesystem found/);
    await expect(readDockerNames(img('missing.img'))).rejects.toThrow(`${img('missing.img')}: cannot open the disk image: ENOENT`);
    // superblock intact, everything after it overwritten: debugfs cannot find the directory
    await expect(readDockerNames(img('broken-fs.img'))).rejects.toThrow(
      `${img('broken-fs.img')}: the ext filesystem in whole disk (offset 0) is damaged: its root directory cannot be read`,
    );
    for (const method of FUSE ? (['fuse', 'convert'] as const) : (['convert'] as const)) {
      const e = await readDockerNames(img('broken.qcow2'), { qcow2Method: method }).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(BadInputError);
      expect(String((e as Error).message)).toMatch(new RegExp(`^${img('broken.qcow2').replace(/[.]/g, '\\.')}: cannot (open|read) as qcow2: `));
    }
    expect(readFileSync('/proc/self/mounts', 'utf8')).not.toMatch(/ciel-disk-/);
  });

  it('caches by (path, mtime, size) and re-reads on change or on an unknown id', async () => {
    const f = img('cache.img');
    execFileSync('cp', [img('raw.img'), f]);
    const n = new DockerDiskNames(f, { minRefreshMs: 0 });
    expect(await n.lookup([IDS[0]])).toEqual(new Map([[IDS[0], EXPECTED.get(IDS[0])]]));
    expect(await n.lookup()).toEqual(EXPECTED);
    expect(n.reads).toBe(1);
    // a non-Docker cgroup name never triggers a read
    expect((await n.lookup(['init.scope'])).size).toBe(0);
    expect(n.reads).toBe(1);
    // unknown Docker id: re-read (minRefreshMs 0), still unknown
    expect((await n.lookup(['7'.repeat(64)])).size).toBe(0);
    expect(n.reads).toBe(2);
    // the image changes (new mtime): re-read
    const t = new Date(Date.now() + 5000);
    utimesSync(f, t, t);
    await n.lookup([IDS[1]]);
    expect(n.reads).toBe(3);
    // rate limit for unknown ids
    const slow = new DockerDiskNames(f, { minRefreshMs: 60_000 });
    await Promise.all([slow.lookup(), slow.lookup()]);
    await slow.lookup(['7'.repeat(64)]);
    expect(slow.reads).toBe(1);
  });
});
