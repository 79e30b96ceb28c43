import { describe, expect, it } from 'vitest';
import { BadInputError } from '../../../common/errors.ts';
import { parseRelease } from '../../../compiler/kernel/release.ts';

describe('parseRelease', () => {
  it('parses the generic flavour', () => {
    const r = parseRelease('6.1.0-56-amd64');
    expect(r).toMatchObject({ release: '6.1.0-56-amd64', abi: '6.1.0-56', abiNumber: 56, flavour: 'amd64' });
    expect(r.packages).toEqual({
      headers: 'linux-headers-6.1.0-56-amd64',
      common: 'linux-headers-6.1.0-56-common',
      kbuild: 'linux-kbuild-6.1',
      image: ['linux-image-6.1.0-56-amd64-unsigned', 'linux-image-6.1.0-56-amd64'],
      dbg: 'linux-image-6.1.0-56-amd64-dbg',
    });
  });

  it('parses cloud and rt; rt has its own common headers', () => {
    const c = parseRelease('6.1.0-47-cloud-amd64');
    expect(c.flavour).toBe('cloud-amd64');
    expect(c.packages.common).toBe('linux-headers-6.1.0-47-common');
    expect(c.packages.headers).toBe('linux-headers-6.1.0-47-cloud-amd64');
    expect(c.packages.image[0]).toBe('linux-image-6.1.0-47-cloud-amd64-unsigned');
    const rt = parseRelease('6.1.0-56-rt-amd64');
    expect(rt.flavour).toBe('rt-amd64');
    expect(rt.packages.common).toBe('linux-headers-6.1.0-56-common-rt');
    expect(rt.commonName).toBe('linux-headers-6.1.0-56-common-rt');
    expect(rt.packages.dbg).toBe('linux-image-6.1.0-56-rt-amd64-dbg');
  });

  it('accepts any 6.1 ABI (which exist is apt\'s answer) and trims whitespace', () => {
    for (let n = 47; n <= 57; n++) expect(parseRelease(` 6.1.0-${n}-amd64\n`).abiNumber).toBe(n);
  });

  it('parses 5.10 (bullseye): -N ABI, kbuild per series, modules under lib/modules as .ko', () => {
    const r = parseRelease('5.10.0-46-rt-amd64');
    expect(r).toMatchObject({ release: '5.10.0-46-rt-amd64', line: '5.10', abi: '5.10.0-46', abiNumber: 46, upstream: '5.10.0', flavour: 'rt-amd64' });
    expect(r.packages).toEqual({
      headers: 'linux-headers-5.10.0-46-rt-amd64',
      common: 'linux-headers-5.10.0-46-common-rt',
      kbuild: 'linux-kbuild-5.10',
      image: ['linux-image-5.10.0-46-rt-amd64-unsigned', 'linux-image-5.10.0-46-rt-amd64'],
      dbg: 'linux-image-5.10.0-46-rt-amd64-dbg',
    });
    expect(r.paths).toEqual({
      vmlinuz: 'boot/vmlinuz-5.10.0-46-rt-amd64',
      config: 'boot/config-5.10.0-46-rt-amd64',
      modulesDir: 'lib/modules/5.10.0-46-rt-amd64',
      moduleExt: '.ko',
      dbgSystemMap: 'usr/lib/debug/boot/System.map-5.10.0-46-rt-amd64',
      headersVmlinux: undefined,
    });
  });

  it('parses 6.12 (+debN, also +deb13.1): kbuild per release, usr/lib/modules, .ko.xz, BTF vmlinux in the headers', () => {
    const r = parseRelease('6.12.118+deb13-cloud-amd64');
    expect(r).toMatchObject({ line: '6.12', abi: '6.12.118+deb13', abiNumber: 118, upstream: '6.12.118', flavour: 'cloud-amd64' });
    expect(r.packages.common).toBe('linux-headers-6.12.118+deb13-common');
    expect(r.packages.kbuild).toBe('linux-kbuild-6.12.118+deb13');
    expect(r.packages.image).toEqual(['linux-image-6.12.118+deb13-cloud-amd64-unsigned', 'linux-image-6.12.118+deb13-cloud-amd64']);
    expect(r.paths.modulesDir).toBe('usr/lib/modules/6.12.118+deb13-cloud-amd64');
    expect(r.paths.moduleExt).toBe('.ko.xz');
    expect(r.paths.headersVmlinux).toBe('usr/src/linux-headers-6.12.118+deb13-cloud-amd64/vmlinux');
    expect(parseRelease('6.12.115+deb13.1-rt-amd64').packages.common).toBe('linux-headers-6.12.115+deb13.1-common-rt');
    expect(parseRelease('6.12.95+deb12-amd64').abi).toBe('6.12.95+deb12');
  });

  it('parses 7.x: split image packages, System.map moved in -dbg, rt shares -common', () => {
    const r = parseRelease('7.3.4+deb13-rt-amd64');
    expect(r).toMatchObject({ line: '7.x', abi: '7.3.4+deb13', upstream: '7.3.4', flavour: 'rt-amd64', commonName: 'linux-headers-7.3.4+deb13-common' });
    expect(r.packages).toEqual({
      headers: 'linux-headers-7.3.4+deb13-rt-amd64',
      common: 'linux-headers-7.3.4+deb13-common',
      kbuild: 'linux-kbuild-7.3.4+deb13',
      image: ['linux-binary-unsigned-7.3.4+deb13-rt-amd64'],
      modules: 'linux-modules-7.3.4+deb13-rt-amd64',
      base: 'linux-base-7.3.4+deb13-rt-amd64',
      dbg: 'linux-image-7.3.4+deb13-rt-amd64-dbg',
    });
    expect(r.paths.vmlinuz).toBe('usr/lib/modules/7.3.4+deb13-rt-amd64/vmlinuz.unsigned');
    expect(r.paths.config).toBe('usr/lib/modules/7.3.4+deb13-rt-amd64/config');
    expect(r.paths.dbgSystemMap).toBe('usr/lib/debug/lib/modules/7.3.4+deb13-rt-amd64/System.map');
    expect(parseRelease('7.2.13+deb14-amd64').line).toBe('7.x');
  });

  it.each([
    ['6.1.0-56-arm64', /flavour 'arm64'/],
    ['6.1.0-56-686-pae', /flavour '686-pae'/],
    ['4.19.0-27-amd64', /kernel 4\.19\.0/],
    ['6.6.0-1-amd64', /kernel 6\.6\.0/],
    ['6.12.118-1-amd64', /kernel 6\.12\.118/],
    ['5.10.0+deb11-amd64', /kernel 5\.10\.0/],
    ['7.3.4+deb13-arm64', /flavour 'arm64'/],
    ['linux', /not a Debian kernel release/],
    ['', /not a Debian kernel release/],
  ])('rejects %j, listing what is accepted', (rel, why) => {
    let err: unknown;
    try {
      parseRelease(rel);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(BadInputError);
    const msg = (err as Error).message;
    expect(msg).toMatch(why);
    expect(msg).toContain('accepted: 5.10.0-N-FLAVOUR, 6.1.0-N-FLAVOUR, 6.12.X+debN-FLAVOUR or 7.X.Y+debN-FLAVOUR');
    expect(msg).toContain('amd64, cloud-amd64, rt-amd64');
  });
});
