// Which kernel a guest runs (from a RAM file laid out as the kernel leaves it) and whether a build fits
// it. No guest: the live cases are in test/cli/monitor-kernel.test.ts.
import { afterAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadBuild } from '../../common/build-artifact.ts';
import { RawFileBackend } from '../../vmi/backends/raw-file.ts';
import { GuestReleaseError } from '../../vmi/guest-release.ts';
import { builtDebianVersion, checkBuildFitsGuest, debianVersionOf, KernelMismatchError, readGuestKernel } from '../../vmi/kernel-identity.ts';

const dir = mkdtempSync(join(tmpdir(), 'ciel-kernel-id-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A 40 MiB "guest RAM" file (pseudo-random bytes) with texts at offsets. */
function ram(name: string, texts: [number, string][]): RawFileBackend {
  const buf = Buffer.alloc(40 << 20);
  for (let i = 0; i < buf.length; i++) buf[i] = (i * 7919) >>> 5;
  for (const [off, t] of texts) buf.write(t, off, 'latin1');
  const f = join(dir, name);
  writeFileSync(f, buf);
  return new RawFileBackend(f);
}

// the real 6.1.0-56-amd64 banner form (init/version.c linux_banner, Debian's build)
const BANNER_61 =
  'Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16)';
// phys_base negative under KASLR, as on the live guest: the image is at phys_base + KERNELOFFSET = 16 MiB onwards
const VMCOREINFO_61 = 'OSRELEASE=6.1.0-56-amd64\nPAGESIZE=4096\nKERNELOFFSET=2000000\nNUMBER(phys_base)=-16777216\n\0';
const MANIFEST_61 = { release: '6.1.0-56-amd64', packages: { 'linux-headers-6.1.0-56-amd64': '6.1.192-2', 'linux-kbuild-6.1': '6.1.192-3', 'linux-image-6.1.0-56-amd64-unsigned': '6.1.192-2' } };

describe('the guest kernel and its Debian build', () => {
  it('the Debian version is the one after the build number, not the compiler\'s', () => {
    expect(debianVersionOf(BANNER_61)).toBe('6.1.192-2');
    expect(debianVersionOf('Linux version 7.3.4+deb13-amd64 (x) (gcc-14 (Debian 14.2.0-19) 14.2.0) #1 SMP PREEMPT_DYNAMIC Debian 7.3.4-1~bpo13+1')).toBe('7.3.4-1~bpo13+1');
    expect(debianVersionOf('Linux version 6.6.0 (me@host) (gcc 13) #4 SMP Tue Jan 2 2024')).toBeUndefined();
    // 6.1's second copy has an empty build number
    expect(debianVersionOf(BANNER_61.replace('#1 SMP', '# SMP'))).toBe('6.1.192-2');
    expect(builtDebianVersion(MANIFEST_61)).toBe('6.1.192-2'); // the image's, not linux-kbuild's -3
    expect(builtDebianVersion({ release: 'x', packages: {} })).toBeUndefined();
  });

  it('reads release and banner from the kernel image window (phys_base + KERNELOFFSET onwards), a banner cut by garbage is no banner', () => {
    const b = ram('61', [
      [0x23000, VMCOREINFO_61],
      [0x0100000, 'Linux version 6.1.0-56-amd64 (fake) #9 Debian 9.9.9-9 (2020-01-01)\n'], // below the image: not it
      [0x1800000, 'Linux version 6.1.0-56-amd64 (cut\x01 off)\n'],
      [0x2400000, `${BANNER_61}\n\0`],
    ]);
    expect(readGuestKernel(b, 'g')).toEqual({ release: '6.1.0-56-amd64', source: 'vmcoreinfo', banner: BANNER_61, debianVersion: '6.1.192-2' });
  });

  it('a dump note names the release; no VMCOREINFO and no banner: GuestReleaseError naming the VM', () => {
    const b = ram('note', [[0x1100000, `${BANNER_61}\0`]]);
    expect(readGuestKernel(b, 'g', '6.1.0-56-amd64')).toMatchObject({ release: '6.1.0-56-amd64', source: 'dump-note', debianVersion: '6.1.192-2' });
    const none = ram('none', []);
    expect(() => readGuestKernel(none, 'vm-x')).toThrow(GuestReleaseError);
  });

  it('a build for another release, or for the same release from other packages, is refused with both releases', () => {
    const guest = { release: '6.1.0-56-amd64', source: 'vmcoreinfo' as const, banner: BANNER_61, debianVersion: '6.1.192-2' };
    expect(() => checkBuildFitsGuest('g', guest, MANIFEST_61)).not.toThrow();
    const cloud = { release: '6.1.0-56-cloud-amd64', packages: { 'linux-image-6.1.0-56-cloud-amd64-unsigned': '6.1.192-2' } };
    let e: unknown;
    try {
      checkBuildFitsGuest('g', guest, cloud);
    } catch (x) {
      e = x;
    }
    expect(e).toBeInstanceOf(KernelMismatchError);
    expect(e).toMatchObject({ vm: 'g', guestRelease: '6.1.0-56-amd64', buildRelease: '6.1.0-56-cloud-amd64' });
    expect((e as Error).message).toBe(
      'g: the monitor build is for kernel 6.1.0-56-cloud-amd64, but the guest runs 6.1.0-56-amd64 (VMCOREINFO in its memory): a monitor reads only the kernel it was built for. ' +
        'Give the guest\'s release (--kernel 6.1.0-56-amd64, or "kernel" in the config), or leave it out to have the guest\'s kernel found and built',
    );
    const older = { ...MANIFEST_61, packages: { 'linux-image-6.1.0-56-amd64-unsigned': '6.1.190-1' } };
    expect(() => checkBuildFitsGuest('g', guest, older)).toThrow(/made from Debian 6\.1\.190-1 packages, but the guest's kernel is Debian 6\.1\.192-2/);
    // a guest whose banner was not found is checked by release only
    expect(() => checkBuildFitsGuest('g', { release: guest.release, source: 'vmcoreinfo' }, older)).not.toThrow();
  });

  it('a build folder copied under another release name is refused by loadBuild', () => {
    const root = join(dir, 'generated');
    const d = join(root, '6.1.0-56-cloud-amd64');
    mkdirSync(d, { recursive: true });
    for (const f of ['abi.js', 'slots.json']) writeFileSync(join(d, f), f === 'slots.json' ? '[]' : '');
    writeFileSync(join(d, 'manifest.json'), JSON.stringify(MANIFEST_61));
    expect(() => loadBuild('6.1.0-56-cloud-amd64', root)).toThrow(
      `${join(d, 'manifest.json')}: holds a build for kernel "6.1.0-56-amd64", not 6.1.0-56-cloud-amd64: run \`ciel build --kernel 6.1.0-56-cloud-amd64\``,
    );
  });
});
