import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RawFileBackend } from '../../vmi/backends/raw-file.ts';
import { GuestReleaseError, readGuestRelease } from '../../vmi/guest-release.ts';

const dir = mkdtempSync(join(tmpdir(), 'ciel-release-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A 4 MiB "guest RAM" file with the given texts at the given offsets over pseudo-random bytes. */
function ram(name: string, texts: [number, string][]): RawFileBackend {
  const buf = Buffer.alloc(4 << 20);
  for (let i = 0; i < buf.length; i++) buf[i] = (i * 7919) >>> 5;
  for (const [off, t] of texts) buf.write(t, off, 'latin1');
  const f = join(dir, name);
  writeFileSync(f, buf);
  return new RawFileBackend(f);
}

const BANNER = 'Linux version 7.3.4+deb13-amd64 (debian-kernel@lists.debian.org) (x86_64-linux-gnu-gcc-14) #1 SMP PREEMPT_DYNAMIC Debian 7.3.4-1~bpo13+1\n\0';

describe('the guest kernel release, read from guest memory', () => {
  it('takes VMCOREINFO OSRELEASE when it is there', () => {
    const b = ram('vmcoreinfo', [
      [0x1000, 'OSRELEASE=%s\n'], // the format string in kernel data is no VMCOREINFO
      [0x23000, 'OSRELEASE=5.10.0-46-amd64\nPAGESIZE=4096\nKERNELOFFSET=1a00000\nNUMBER(phys_base)=0\n\0'],
      [0x40000, BANNER],
    ]);
    expect(readGuestRelease(b)).toMatchObject({ release: '5.10.0-46-amd64', source: 'vmcoreinfo', gpa: 0x23000n });
  });

  it('falls back to the banner, skipping format strings and names that are no release', () => {
    const b = ram('banner', [
      [0x2000, 'Linux version %s (%s)\0'],
      [0x3000, 'Linux version ../../etc/passwd (x)\0'],
      [0x3100, 'Linux version 6.1.0-56-amd64\0'], // no "(" after it: not the banner
      [0x300005, BANNER],
    ]);
    expect(readGuestRelease(b)).toMatchObject({ release: '7.3.4+deb13-amd64', source: 'banner', gpa: 0x300005n });
  });

  it('says what to do when neither is there', () => {
    const b = ram('none', []);
    expect(() => readGuestRelease(b, 'vm-x')).toThrow(GuestReleaseError);
    expect(() => readGuestRelease(b, 'vm-x')).toThrow(/vm-x: cannot tell the guest kernel release.*--kernel RELEASE.*--kernel-dir/);
  });
});
