// The guest's kernel release read from its own memory, so `ciel monitor` can pick (or build) the
// monitor without `--kernel`: VMCOREINFO's OSRELEASE first (the kernel writes it once at boot; found in
// 5-23 ms, vmi/kaslr.ts), else the `Linux version <release> (` banner (linux_banner, and its copy in
// the kernel log). Guest memory is untrusted: whatever is found must look like a release name, and the
// monitor built for it is still checked against the guest (KASLR, slots) before it is used.
import koffi from 'koffi';
import { CielError } from '../common/errors.ts';
import type { MemoryBackend, PhysRange } from './backends/backend.ts';
import { findVmcoreinfo } from './kaslr.ts';

/** The release could not be read from the guest's memory. */
export class GuestReleaseError extends CielError {
  constructor(
    readonly vm: string,
    detail: string,
  ) {
    super(`${vm}: ${detail}`);
  }
}

export interface GuestRelease {
  /** e.g. `6.1.0-56-amd64`, `7.3.4+deb13-amd64` */
  release: string;
  source: 'vmcoreinfo' | 'banner';
  /** guest-physical address of the text it came from */
  gpa: bigint;
  /** VMCOREINFO's NUMBER(phys_base): where the kernel image lies in guest-physical memory (null when not given) */
  physBase: bigint | null;
  /** VMCOREINFO's KERNELOFFSET (the KASLR slide; null when not given) */
  kernelOffset: bigint | null;
  ms: number;
}

/** What `uname -r` can be and a file name may hold (same rule as common/build-artifact.ts). */
const RELEASE = /^[0-9][0-9A-Za-z.+_~-]{0,127}$/;
const BANNER = Buffer.from('Linux version ', 'latin1');
const CHUNK = 1n << 28n;

export function isReleaseName(s: string): boolean {
  return RELEASE.test(s);
}

/** `Linux version <release> (` at byte i of buf, or undefined (format strings, garbage). */
export function bannerReleaseAt(buf: Buffer, i: number): string | undefined {
  const start = i + BANNER.length;
  const end = buf.indexOf(0x20, start);
  if (end < 0 || end - start > 128 || buf[end + 1] !== 0x28 /* ( */) return undefined;
  const rel = buf.toString('latin1', start, end);
  return isReleaseName(rel) ? rel : undefined;
}

function viewOf(r: PhysRange, off: bigint, len: bigint): Buffer {
  return Buffer.from(koffi.view(r.host + off, Number(len)) as ArrayBuffer);
}

function findBanner(backend: MemoryBackend): { release: string; gpa: bigint } | undefined {
  for (const r of backend.ranges()) {
    for (let off = 0n; off < r.length; off += CHUNK) {
      // overlap the chunks by one banner's length so none is cut in two
      const len = off + CHUNK + 256n > r.length ? r.length - off : CHUNK + 256n;
      const buf = viewOf(r, off, len);
      for (let i = buf.indexOf(BANNER); i >= 0; i = buf.indexOf(BANNER, i + 1)) {
        const release = bannerReleaseAt(buf, i);
        if (release) return { release, gpa: r.gpa + off + BigInt(i) };
      }
    }
  }
  return undefined;
}

/** The running kernel's release, from VMCOREINFO or the banner. Throws GuestReleaseError naming the VM. */
export function readGuestRelease(backend: MemoryBackend, vm: string = backend.kind): GuestRelease {
  const t0 = performance.now();
  const info = findVmcoreinfo(backend);
  if (info && isReleaseName(info.osrelease)) {
    return { release: info.osrelease, source: 'vmcoreinfo', gpa: info.phys, physBase: info.physBase, kernelOffset: info.kernelOffset, ms: performance.now() - t0 };
  }
  const banner = findBanner(backend);
  if (banner) return { ...banner, source: 'banner', physBase: info?.physBase ?? null, kernelOffset: info?.kernelOffset ?? null, ms: performance.now() - t0 };
  throw new GuestReleaseError(
    vm,
    'cannot tell the guest kernel release: no VMCOREINFO and no "Linux version <release> (" banner in its memory ' +
      '(not booted yet, or not Linux); give it with --kernel RELEASE, or --kernel-dir for a kernel Debian does not carry',
  );
}
