// Which kernel a guest runs, and whether a monitor build fits it. A monitor built for another kernel
// reads the guest at addresses (System.map, struct offsets) of that other kernel: without this check
// the user saw `guest fault at 0xfffffffffffff000` and had to guess. The guest's release comes from
// VMCOREINFO (or its banner, vmi/guest-release.ts); the banner's `Debian <version>` is compared with the
// version of the packages the build was made from, so a build of the same release name from other
// packages is caught too. Guest memory is untrusted: what is read here only picks and refuses builds;
// a guest that lies gets samples that fault, never more.
import koffi from 'koffi';
import type { BuildManifest } from '../common/build-artifact.ts';
import { VmError } from '../common/errors.ts';
import type { MemoryBackend } from './backends/backend.ts';
import { isReleaseName, readGuestRelease } from './guest-release.ts';

export interface GuestKernel {
  /** e.g. 6.1.0-56-amd64 */
  release: string;
  /** where the release was read: VMCOREINFO in guest RAM, the `Linux version` banner, or a dump's VMCOREINFO note */
  source: 'vmcoreinfo' | 'banner' | 'dump-note';
  /** the `Linux version <release> (...` line near the kernel image (linux_banner), when found */
  banner?: string;
  /** the Debian package version the banner names, e.g. 6.1.192-2 */
  debianVersion?: string;
}

/** In words, for messages. */
export function sourceText(source: GuestKernel['source']): string {
  return source === 'vmcoreinfo' ? 'VMCOREINFO in its memory' : source === 'banner' ? 'its "Linux version" banner' : "the dump's VMCOREINFO note";
}

/** A monitor build that is not for the kernel the guest runs (names the VM and both releases). */
export class KernelMismatchError extends VmError {
  constructor(
    vm: string,
    readonly guestRelease: string,
    readonly buildRelease: string,
    detail: string,
  ) {
    super(vm, detail);
  }
}

/** No monitor build for the guest's kernel, and none could be made (names the VM and the release found). */
export class NoKernelBuildError extends VmError {
  constructor(
    vm: string,
    readonly release: string,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(vm, detail, options);
  }
}

/** How far the kernel image (text, rodata, data) is looked for, from where it was loaded. */
const IMAGE_WINDOW = 256n << 20n;
const MAX_BANNER = 512;
/**
 * `... #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16)`: the `Debian X` that ends the line (the
 * compiler's `(Debian 12.2.0-14+deb12u1)` is followed by `)`, never at the end). 6.1 keeps a second
 * copy with an empty build number (`# SMP`), so the number is not relied on.
 */
const DEBIAN_VERSION = /\bDebian ([0-9][0-9A-Za-z.+~:-]{0,63})(?: \(\d{4}-\d{2}-\d{2}\))?$/;

export function debianVersionOf(banner: string): string | undefined {
  return DEBIAN_VERSION.exec(banner)?.[1];
}

/**
 * The `Linux version <release> (` line in the kernel image's physical window, so a whole-RAM scan is
 * not needed on a big guest. `imageBase` is phys_base + KERNELOFFSET: a kernel virtual address v is
 * at physical v - __START_KERNEL_map + imageBase, so the image (linux_banner in .rodata, the early log
 * buffer) starts a little above it (CONFIG_PHYSICAL_START, 16 MiB on Debian). phys_base is negative
 * under KASLR (seen: -0x24800000 with a slide of 0x32400000).
 */
export function findBannerOf(backend: MemoryBackend, release: string, imageBase: bigint | null): string | undefined {
  const needle = Buffer.from(`Linux version ${release} (`, 'latin1');
  const lo = imageBase !== null && imageBase >= 0n ? imageBase : 0n;
  const hi = lo + IMAGE_WINDOW;
  for (const r of backend.ranges()) {
    const start = r.gpa > lo ? r.gpa : lo;
    const end = r.gpa + r.length < hi ? r.gpa + r.length : hi;
    if (start >= end) continue;
    const buf = Buffer.from(koffi.view(r.host + (start - r.gpa), Number(end - start)) as ArrayBuffer);
    for (let i = buf.indexOf(needle); i >= 0; i = buf.indexOf(needle, i + 1)) {
      let j = i;
      const stop = Math.min(buf.length, i + MAX_BANNER);
      while (j < stop && buf[j] >= 0x20 && buf[j] < 0x7f) j++;
      // a whole line: ends in a newline or NUL, not cut off by garbage
      if (j < buf.length && (buf[j] === 0x0a || buf[j] === 0)) return buf.toString('latin1', i, j);
    }
  }
  return undefined;
}

/**
 * The guest's kernel: its release (from `noteRelease`, a dump's own VMCOREINFO note, when given; else
 * from guest RAM) and, when its banner is found, the Debian version it was built as. Throws
 * GuestReleaseError (naming the VM, saying what to do) when guest RAM tells nothing.
 */
export function readGuestKernel(backend: MemoryBackend, vm: string, noteRelease?: string): GuestKernel {
  const imageBase = (r: { physBase: bigint | null; kernelOffset: bigint | null }) =>
    r.physBase !== null && r.kernelOffset !== null ? r.physBase + r.kernelOffset : null;
  let base: bigint | null = null;
  let k: GuestKernel;
  if (noteRelease !== undefined && isReleaseName(noteRelease)) {
    k = { release: noteRelease, source: 'dump-note' };
    try {
      base = imageBase(readGuestRelease(backend, vm));
    } catch {
      /* the note is enough to pick a build */
    }
  } else {
    const r = readGuestRelease(backend, vm);
    base = imageBase(r);
    k = { release: r.release, source: r.source };
  }
  const banner = findBannerOf(backend, k.release, base);
  if (banner) {
    k.banner = banner;
    const v = debianVersionOf(banner);
    if (v) k.debianVersion = v;
  }
  return k;
}

/** The Debian version of the kernel packages a build was made from (the image's, else the headers'); undefined for --kernel-dir builds. */
export function builtDebianVersion(m: Pick<BuildManifest, 'release' | 'packages'>): string | undefined {
  const p = m.packages ?? {};
  for (const name of [`linux-image-${m.release}-unsigned`, `linux-image-${m.release}`, `linux-binary-unsigned-${m.release}`, `linux-headers-${m.release}`])
    if (typeof p[name] === 'string') return p[name];
  return undefined;
}

/**
 * Refuse a build that is not for the guest's kernel: another release, or the same release name built
 * from other packages than the banner names. KernelMismatchError names the VM and both releases.
 */
export function checkBuildFitsGuest(vm: string, guest: GuestKernel, build: Pick<BuildManifest, 'release' | 'packages'>): void {
  const from = sourceText(guest.source);
  if (guest.release !== build.release)
    throw new KernelMismatchError(
      vm,
      guest.release,
      build.release,
      `the monitor build is for kernel ${build.release}, but the guest runs ${guest.release} (${from}): a monitor reads only the kernel it was built for. ` +
        `Give the guest's release (--kernel ${guest.release}, or "kernel" in the config), or leave it out to have the guest's kernel found and built`,
    );
  const built = builtDebianVersion(build);
  if (guest.debianVersion && built && guest.debianVersion !== built)
    throw new KernelMismatchError(
      vm,
      guest.release,
      build.release,
      `the monitor build for ${build.release} was made from Debian ${built} packages, but the guest's kernel is Debian ${guest.debianVersion} ` +
        `(same release name, another kernel build; its banner: "${guest.banner}"): rebuild it for this guest (\`ciel build --kernel ${guest.release}\` with that version's packages)`,
    );
}
