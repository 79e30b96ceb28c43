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

  it('accepts every ABI from 47 to 56 and trims whitespace', () => {
    for (let n = 47; n <= 56; n++) expect(parseRelease(` 6.1.0-${n}-amd64\n`).abiNumber).toBe(n);
  });

  it.each([
    ['6.1.0-46-amd64', /ABI 46 .*not supported/],
    ['6.1.0-57-amd64', /ABI 57 .*not supported/],
    ['6.1.0-56-arm64', /flavour 'arm64'/],
    ['6.1.0-56-686-pae', /flavour '686-pae'/],
    ['5.10.0-30-amd64', /kernel 5\.10\.0/],
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
    expect(msg).toContain('accepted: 6.1.0-N-FLAVOUR with N in 47..56');
    expect(msg).toContain('amd64, cloud-amd64, rt-amd64');
  });
});
