import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { BadInputError, ToolError } from '../../../common/errors.ts';
import { arMembers, extractDebMember, extractDebMembers, extractRemoteDebMembers } from '../../../compiler/kernel/deb.ts';
import { kernelClangFlags } from '../../../compiler/kernel/flags.ts';
import { fetchHeaders, fetchKernel, fetchKernelForBuild, kernelTreeFromDir, type KernelTree } from '../../../compiler/kernel/packages.ts';
import { readElfSection } from '../../../compiler/kernel/btf.ts';
import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'ciel-kernel-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('fetchKernel 6.1.0-56-amd64 (downloads into the cache on a fresh machine)', () => {
  let tree: KernelTree & { vmlinuz: string };
  const lines: string[] = [];
  beforeAll(async () => {
    tree = await fetchKernel('6.1.0-56-amd64', { log: (l) => lines.push(l), onProgress: () => {} });
  });

  it('returns the merged tree', () => {
    expect(tree).toMatchObject({ release: '6.1.0-56-amd64', flavour: 'amd64', abi: '6.1.0-56' });
    expect(tree.commonDir).toBe(join(tree.dir, 'usr/src/linux-headers-6.1.0-56-common'));
    expect(tree.archDir).toBe(join(tree.dir, 'usr/src/linux-headers-6.1.0-56-amd64'));
    expect(existsSync(join(tree.commonDir, 'include/linux/cgroup-defs.h'))).toBe(true);
    expect(existsSync(join(tree.archDir, 'include/generated/autoconf.h'))).toBe(true);
    expect(readFileSync(tree.vmlinuz).toString('latin1', 0x202, 0x206)).toBe('HdrS');
    expect(readFileSync(tree.config, 'utf8')).toContain('CONFIG_DEBUG_INFO_BTF=y');
    expect(statSync(tree.systemMap).size).toBe(3914202);
    for (const p of ['linux-headers-6.1.0-56-amd64', 'linux-headers-6.1.0-56-common', 'linux-image-6.1.0-56-amd64-unsigned', 'linux-image-6.1.0-56-amd64-dbg']) {
      expect(tree.packageVersions[p]).toBe('6.1.192-2');
      // the -dbg package is streamed (only up to System.map) unless an older run cached all of it
      if (!p.endsWith('-dbg')) expect(existsSync(tree.debs[p]!)).toBe(true);
    }
    expect(tree.packageVersions['linux-kbuild-6.1']).toMatch(/^6\.1\./);
  });

  it('is a few stats when warm', async () => {
    const t0 = performance.now();
    const again = await fetchKernel('6.1.0-56-amd64', { onProgress: () => {} });
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(again).toEqual(tree);
  });

  it('fetches the rt headers (own -common-rt tree)', async () => {
    const rt = await fetchHeaders('6.1.0-56-rt-amd64', { onProgress: () => {} });
    expect(rt.commonDir).toBe(join(rt.dir, 'usr/src/linux-headers-6.1.0-56-common-rt'));
    expect(rt.packageVersions['linux-headers-6.1.0-56-common-rt']).toBe('6.1.192-2');
    expect(existsSync(join(rt.archDir, '.config'))).toBe(true);
  });

  it('builds the DESIGN.md clang flag set, shims first', () => {
    const f = kernelClangFlags(tree, ['/shim/a', '/shim/b']);
    const firstI = f.findIndex((x) => x.startsWith('-I'));
    expect(f.slice(firstI, firstI + 3)).toEqual(['-I/shim/a', '-I/shim/b', `-I${tree.commonDir}/arch/x86/include`]);
    expect(f).toContain(`-I${tree.archDir}/include/generated/uapi`);
    expect(f[f.indexOf('-isystem') + 1]).toMatch(/clang\/14.*\/include$/);
    for (const x of ['-nostdinc', '-D__KERNEL__', '-O2', '-fPIC', '-fno-vectorize', '-fno-slp-vectorize', '-g0', '-mno-sse', '--target=x86_64-linux-gnu']) {
      expect(f).toContain(x);
    }
    expect(f.slice(-2)).toEqual(['-emit-llvm', '-c']);
    expect(kernelClangFlags(tree, [], { emit: 'll' }).slice(-2)).toEqual(['-S', '-emit-llvm']);
  });

  it('says how to install clang-14 when it is missing', () => {
    const saved = process.env.PATH;
    process.env.PATH = join(tmp, 'empty-path');
    try {
      expect(() => kernelClangFlags(tree, [])).toThrow(ToolError);
      expect(() => kernelClangFlags(tree, [])).toThrow(/clang-14: not found; install it with: apt-get install -y clang-14/);
    } finally {
      process.env.PATH = saved;
    }
  });
});

describe.each([
  // line, release, package versions, System.map size, vmlinuz found
  ['5.10', '5.10.0-46-amd64', '5.10.262-1', 'linux-image-5.10.0-46-amd64-unsigned'],
  ['6.12', '6.12.118+deb13-amd64', '6.12.118-1', 'linux-image-6.12.118+deb13-amd64-unsigned'],
  ['7.x', '7.3.4+deb13-amd64', '7.3.4-1~bpo13+1', 'linux-binary-unsigned-7.3.4+deb13-amd64'],
])('the %s line: %s (private apt state, cached under ~/.cache/ciel)', (line, release, version, imagePkg) => {
  it('ciel build\'s fetch: headers, the real System.map, BTF from the headers\' vmlinux where there is one', async () => {
    const lines: string[] = [];
    const tree = await fetchKernelForBuild(release, { log: (l) => lines.push(l), onProgress: () => {} });
    expect(tree.line).toBe(line);
    expect(existsSync(join(tree.commonDir, 'include/linux/cgroup-defs.h'))).toBe(true);
    expect(existsSync(join(tree.archDir, 'include/generated/autoconf.h'))).toBe(true);
    expect(tree.packageVersions[`linux-headers-${release}`]).toBe(version);
    expect(tree.packageVersions[`linux-image-${release}-dbg`]).toBe(version);
    const map = readFileSync(tree.systemMap, 'utf8');
    expect(map).not.toMatch(/The real System\.map is in/);
    expect(map).toMatch(/^ffffffff81000000 [Tt] _text$/m);
    if (line === '5.10') {
      expect(tree.vmlinux).toBeUndefined(); // 5.10 headers carry no vmlinux: BTF comes from the image
      expect(tree.vmlinuz).toBeDefined();
    } else {
      expect(tree.vmlinux).toBe(join(tree.archDir, 'vmlinux'));
      expect(readElfSection(tree.vmlinux!, '.BTF').length).toBeGreaterThan(1_000_000);
    }
  });

  it('the guest\'s fetch adds the image (vmlinuz, config, modules)', async () => {
    const tree = await fetchKernel(release, { onProgress: () => {} });
    expect(readFileSync(tree.vmlinuz).toString('latin1', 0x202, 0x206)).toBe('HdrS');
    expect(tree.packageVersions[imagePkg]).toBe(version);
    expect(readFileSync(tree.config, 'utf8')).toContain('CONFIG_DEBUG_INFO_BTF=y');
    const ext = line === '5.10' ? '.ko' : '.ko.xz';
    expect(existsSync(join(tree.modulesDir!, `kernel/drivers/net/veth${ext}`))).toBe(true);
  });
});

describe('fetch errors', () => {
  it('an absent release lists the nearest ones apt has', async () => {
    // 6.1.0-52 was never published for bookworm; 50 and 53 were
    const err = await fetchKernelForBuild('6.1.0-52-amd64', { onProgress: () => {} }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BadInputError);
    const msg = (err as Error).message;
    expect(msg).toMatch(/kernel 6\.1\.0-52-amd64: apt has no package linux-headers-6\.1\.0-52-common/);
    expect(msg).toMatch(/nearest amd64 releases that exist: .*6\.1\.0-50-amd64, 6\.1\.0-53-amd64/);
    const err7 = await fetchKernelForBuild('7.3.9+deb13-amd64', { onProgress: () => {} }).catch((e: unknown) => e);
    expect((err7 as Error).message).toMatch(/nearest amd64 releases that exist: .*7\.3\.4\+deb13-amd64/);
  });

  it('names the package and the release apt does not have', async () => {
    const saved = process.env.CIEL_CACHE;
    process.env.CIEL_CACHE = join(tmp, 'cache');
    try {
      // ABI 48 was published as a signed image only: no headers in the archive
      const err = await fetchHeaders('6.1.0-48-amd64', { aptUpdate: false, onProgress: () => {} }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BadInputError);
      expect((err as Error).message).toMatch(/kernel 6\.1\.0-48-amd64: apt has no package linux-headers-6\.1\.0-48-common/);
    } finally {
      if (saved === undefined) delete process.env.CIEL_CACHE;
      else process.env.CIEL_CACHE = saved;
    }
  });

  it('rejects a bad release before touching apt', async () => {
    await expect(fetchKernel('6.1.0-56-arm64')).rejects.toThrow(/flavour 'arm64'.*accepted/);
  });
});

describe('extracting single members from a .deb', () => {
  const longDir = `usr/lib/debug/${'deep/'.repeat(20)}`;
  async function makeDeb(comp: string): Promise<string> {
    const root = join(tmp, `pkg-${comp}`);
    mkdirSync(join(root, 'DEBIAN'), { recursive: true });
    writeFileSync(join(root, 'DEBIAN/control'), 'Package: ciel-test\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\nDescription: test\n');
    mkdirSync(join(root, 'boot'), { recursive: true });
    mkdirSync(join(root, longDir), { recursive: true });
    writeFileSync(join(root, 'boot/a.txt'), 'first\n');
    writeFileSync(join(root, 'boot/empty'), '');
    writeFileSync(join(root, longDir, 'System.map-x'), 'ffffffff81000000 T _text\n'.repeat(5000));
    const deb = join(tmp, `t-${comp}.deb`);
    await execa('dpkg-deb', [`-Z${comp}`, '--root-owner-group', '--build', root, deb]);
    return deb;
  }

  it.each(['xz', 'gzip', 'zstd'])('reads the ar table and extracts wanted members (%s)', async (comp) => {
    const deb = await makeDeb(comp);
    expect(arMembers(deb).map((m) => m.name)).toEqual(['debian-binary', 'control.tar.' + (comp === 'gzip' ? 'gz' : comp === 'xz' ? 'xz' : 'zst'), 'data.tar.' + (comp === 'gzip' ? 'gz' : comp === 'xz' ? 'xz' : 'zst')]);
    let calls = 0;
    const out = join(tmp, `out-${comp}`);
    const r = await extractDebMembers(
      deb,
      new Map([
        [`./${longDir}System.map-x`, join(out, 'map')],
        ['./boot/empty', join(out, 'empty')],
      ]),
      { onBytes: () => calls++ },
    );
    expect(r.written.size).toBe(2);
    expect(readFileSync(join(out, 'map'), 'utf8')).toBe('ffffffff81000000 T _text\n'.repeat(5000));
    expect(readFileSync(join(out, 'empty'), 'utf8')).toBe('');
    expect(existsSync(join(out, 'a.txt'))).toBe(false);
    expect(calls).toBeGreaterThan(0);
    await expect(extractDebMember(deb, './boot/missing', join(out, 'x'))).rejects.toThrow(/has no member\(s\) \.\/boot\/missing/);
  });
});

describe('streaming one member of a .deb over HTTP (how the -dbg System.map is taken)', () => {
  it('reads only the bytes up to the member through Range requests', async () => {
    const root = join(tmp, 'remote-pkg');
    mkdirSync(join(root, 'DEBIAN'), { recursive: true });
    writeFileSync(join(root, 'DEBIAN/control'), 'Package: ciel-remote\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\nDescription: test\n');
    mkdirSync(join(root, 'usr/lib/debug/boot'), { recursive: true });
    mkdirSync(join(root, 'zzz'), { recursive: true });
    writeFileSync(join(root, 'usr/lib/debug/boot/System.map-x'), 'ffffffff81000000 T _text\n'.repeat(100));
    // 16 MiB of incompressible data after the wanted member (tar order is by name)
    writeFileSync(join(root, 'zzz/big'), randomBytes(16 * 1024 * 1024));
    const deb = join(tmp, 'remote.deb');
    await execa('dpkg-deb', ['-Zgzip', '-z1', '--root-owner-group', '--build', root, deb]);
    const body = readFileSync(deb);
    let served = 0;
    const ranges: string[] = [];
    const server = createServer((req, res) => {
      const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
      if (!m) {
        res.writeHead(200);
        res.end(body);
        return;
      }
      ranges.push(req.headers.range!);
      const [a, b] = [Number(m[1]), Math.min(Number(m[2]), body.length - 1)];
      res.writeHead(206, { 'Content-Range': `bytes ${a}-${b}/${body.length}`, 'Content-Length': b - a + 1 });
      const chunk = 64 * 1024;
      let p = a;
      const pump = (): void => {
        while (p <= b) {
          const piece = body.subarray(p, Math.min(p + chunk, b + 1));
          p += piece.length;
          served += piece.length;
          if (!res.write(piece)) return void res.once('drain', pump);
        }
        res.end();
      };
      res.on('close', () => (p = b + 1));
      pump();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const port = (server.address() as { port: number }).port;
      const dest = join(tmp, 'remote-out', 'System.map');
      const r = await extractRemoteDebMembers(`http://127.0.0.1:${port}/remote.deb`, new Map([['./usr/lib/debug/boot/System.map-x', dest]]));
      expect(readFileSync(dest, 'utf8')).toBe('ffffffff81000000 T _text\n'.repeat(100));
      // one request for the ar table, then bounded windows of the data member (a range open to the
      // end of a 1 GB package is slow to start on the mirrors): here the first 2 MiB window holds it
      expect(ranges[0]).toBe('bytes=0-262143');
      expect(ranges.length).toBe(2);
      expect(ranges[1]).toMatch(/^bytes=\d+-\d+$/);
      const [a, b] = ranges[1]!.slice(6).split('-').map(Number);
      expect(b! - a! + 1).toBe(2 * 1024 * 1024);
      expect(r.compressedTotal).toBeGreaterThan(16 * 1024 * 1024);
      // stopped long before the end of the 16 MiB member that follows
      expect(served).toBeLessThan(body.length / 2);
      // a member past the first window is reached through the next, bigger ones
      const tail = join(tmp, 'remote-out', 'big');
      ranges.length = 0;
      await extractRemoteDebMembers(`http://127.0.0.1:${port}/remote.deb`, new Map([['./zzz/big', tail]]));
      expect(readFileSync(tail).equals(readFileSync(join(root, 'zzz/big')))).toBe(true);
      expect(ranges.slice(1).map((x) => x.slice(6).split('-').map(Number)).map(([x, y]) => y! - x! + 1).slice(0, 3)).toEqual([2, 4, 8].map((m) => m * 1024 * 1024));
      await expect(extractRemoteDebMembers(`http://127.0.0.1:${port}/remote.deb`, new Map([['./nope', join(tmp, 'nope')]]))).rejects.toThrow(/no member\(s\) \.\/nope/);
    } finally {
      server.close();
    }
  });
});

describe('kernelTreeFromDir', () => {
  it('takes an unpacked build tree where K == O', () => {
    const d = join(tmp, 'linux');
    for (const sub of ['include/linux', 'include/generated', 'include/config', 'arch/x86/include/generated']) mkdirSync(join(d, sub), { recursive: true });
    writeFileSync(join(d, 'include/config/kernel.release'), '6.1.0-56-amd64\n');
    const map = join(tmp, 'System.map');
    writeFileSync(map, '');
    const t = kernelTreeFromDir(d, map);
    expect(t).toMatchObject({ release: '6.1.0-56-amd64', flavour: 'amd64', abi: '6.1.0-56', commonDir: d, archDir: d, config: join(d, '.config'), systemMap: map, vmlinuz: join(d, 'arch/x86/boot/bzImage') });
    expect(t.vmlinux).toBeUndefined();
    writeFileSync(join(d, 'include/config/kernel.release'), '6.8.0-custom+\n');
    expect(kernelTreeFromDir(d, map)).toMatchObject({ release: '6.8.0-custom+', flavour: 'custom' });
  });

  it('says what is missing', () => {
    expect(() => kernelTreeFromDir(join(tmp, 'nope'), '/x')).toThrow(/not a kernel build tree/);
    const d = join(tmp, 'half');
    mkdirSync(join(d, 'include/linux'), { recursive: true });
    mkdirSync(join(d, 'arch/x86/include'), { recursive: true });
    expect(() => kernelTreeFromDir(d, '/x')).toThrow(/not configured\/built/);
  });
});
