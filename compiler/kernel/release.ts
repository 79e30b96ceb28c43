// Debian kernel release strings (`uname -r` of a Debian guest) of the four kernel lines Debian's
// archive carries, and the packages (and paths inside them) that hold each part of that kernel:
// headers (two trees), kbuild, the image (vmlinuz + .config + modules) and the -dbg package (the
// real System.map).
//
//   line  release form            suites (DESIGN.md "Other kernel lines")
//   5.10  5.10.0-N-FLAVOUR         bullseye(-updates, -security)
//   6.1   6.1.0-N-FLAVOUR          bookworm(-updates, -security)
//   6.12  6.12.X+debN-FLAVOUR      trixie(-security), bookworm-backports (+deb12)
//   7.x   7.X.Y+debN-FLAVOUR       trixie-backports (+deb13), sid (+deb14)
//
// Package layouts that changed: 6.12 and 7.x keep modules under usr/lib/modules as .ko.xz and ship
// a BTF-only `vmlinux` in the flavour headers package; 7.x has no linux-image-<rel>-unsigned
// (vmlinuz is in linux-binary-unsigned-<rel>, modules in linux-modules-<rel>, the config in
// linux-base-<rel>) and its -dbg package moved System.map under usr/lib/debug/lib/modules/<rel>/.

import { BadInputError } from '../../common/errors.ts';

/** Kernel flavours Debian builds for amd64 that Ciel knows the package layout of. */
export const FLAVOURS = ['amd64', 'cloud-amd64', 'rt-amd64'] as const;
export type Flavour = (typeof FLAVOURS)[number];

export const LINES = ['5.10', '6.1', '6.12', '7.x'] as const;
export type KernelLine = (typeof LINES)[number];

/** The newest 6.1 ABI measured here (examples only: which ABIs exist is apt's answer, see packages.ts nearestReleases). */
export const ABI_MAX = 57;

/** Upstream version all Debian 12 kernels are based on. */
export const UPSTREAM = '6.1.0';

export interface KernelPackages {
  /** flavour-specific generated headers + .config: `linux-headers-<release>` */
  headers: string;
  /** the headers shared by all flavours of one ABI: `linux-headers-<abi>-common[-rt]` */
  common: string;
  /** kbuild tools (one package per series on 5.10/6.1, per release on 6.12/7.x) */
  kbuild: string;
  /** packages holding vmlinuz, first that apt knows wins (unsigned before signed) */
  image: string[];
  /** 7.x: the modules are in their own package */
  modules?: string;
  /** 7.x: config, modules.builtin, placeholder System.map */
  base?: string;
  /** debug symbols; the only package with the real System.map */
  dbg: string;
}

/** Where things are inside the packages, relative to the extraction root. */
export interface PackagePaths {
  vmlinuz: string;
  config: string;
  /** `lib/modules/<rel>` or `usr/lib/modules/<rel>` */
  modulesDir: string;
  /** module file extension: `.ko` (5.10, 6.1) or `.ko.xz` (6.12, 7.x) */
  moduleExt: '.ko' | '.ko.xz';
  /** System.map inside the -dbg package's data.tar */
  dbgSystemMap: string;
  /** the BTF-only vmlinux in the flavour headers package (6.12, 7.x), used instead of the image for BTF */
  headersVmlinux?: string;
}

export interface KernelRelease {
  /** the full release string, e.g. `6.1.0-56-amd64`, `7.3.4+deb13-rt-amd64` */
  release: string;
  line: KernelLine;
  /** ABI string as used in package names, e.g. `6.1.0-56`, `6.12.118+deb13` */
  abi: string;
  /** 5.10/6.1: the ABI number (56); 6.12/7.x: the upstream patch level (118) */
  abiNumber: number;
  /** upstream kernel version `major.minor.patch` (6.1.0 and 5.10.0 for the -N lines) */
  upstream: string;
  flavour: Flavour;
  /** `linux-headers-<abi>-common` (or `-common-rt`) directory / package name */
  commonName: string;
  packages: KernelPackages;
  paths: PackagePaths;
}

const ACCEPTED =
  'accepted: 5.10.0-N-FLAVOUR, 6.1.0-N-FLAVOUR, 6.12.X+debN-FLAVOUR or 7.X.Y+debN-FLAVOUR with FLAVOUR one of ' +
  `${FLAVOURS.join(', ')} (e.g. 5.10.0-32-amd64, ${UPSTREAM}-${ABI_MAX}-amd64, 6.12.118+deb13-cloud-amd64, 7.3.4+deb13-rt-amd64)`;

function acceptedText(): string {
  return ACCEPTED;
}

function lineOf(upstream: string): KernelLine | undefined {
  if (upstream === '5.10.0') return '5.10';
  if (upstream === UPSTREAM) return '6.1';
  if (/^6\.12\.\d+$/.test(upstream)) return '6.12';
  if (/^7\.\d+\.\d+$/.test(upstream)) return '7.x';
  return undefined;
}

/** Parse a Debian kernel release string of one of the four lines. Throws BadInputError (listing what is accepted) otherwise. */
export function parseRelease(release: string): KernelRelease {
  const text = release.trim();
  // 5.10 / 6.1: <x.y.0>-<N>-<flavour>;  6.12 / 7.x: <x.y.z>+deb<N>[.M]-<flavour>
  const m = /^(\d+\.\d+\.\d+)(?:-(\d+)|\+(deb\d+(?:\.\d+)?))-([a-z0-9-]+)$/.exec(text);
  if (!m) {
    throw new BadInputError('--kernel', `'${release}' is not a Debian kernel release string; ${acceptedText()}`);
  }
  const [, upstream, abiStr, debTag, flavourStr] = m as unknown as [string, string, string | undefined, string | undefined, string];
  const line = lineOf(upstream);
  const numbered = line === '5.10' || line === '6.1';
  if (!line || numbered !== (abiStr !== undefined)) {
    throw new BadInputError('--kernel', `kernel ${upstream} of '${release}' is not supported; ${acceptedText()}`);
  }
  if (!(FLAVOURS as readonly string[]).includes(flavourStr)) {
    throw new BadInputError('--kernel', `flavour '${flavourStr}' of '${release}' is not supported; ${acceptedText()}`);
  }
  const flavour = flavourStr as Flavour;
  let abi: string;
  let abiNumber: number;
  if (numbered) {
    abiNumber = Number(abiStr);
    abi = `${upstream}-${abiNumber}`;
  } else {
    abiNumber = Number(upstream.split('.')[2]);
    abi = `${upstream}+${debTag}`;
  }
  const rel = `${abi}-${flavour}`;
  // 7.x builds rt from the same -common headers; the older lines have a -common-rt tree
  const commonName = `linux-headers-${abi}-common${flavour === 'rt-amd64' && line !== '7.x' ? '-rt' : ''}`;
  const kbuild = numbered ? `linux-kbuild-${upstream.split('.').slice(0, 2).join('.')}` : `linux-kbuild-${abi}`;
  const usrMerged = !numbered;
  const modulesDir = `${usrMerged ? 'usr/' : ''}lib/modules/${rel}`;
  const packages: KernelPackages =
    line === '7.x'
      ? {
          headers: `linux-headers-${rel}`,
          common: commonName,
          kbuild,
          image: [`linux-binary-unsigned-${rel}`],
          modules: `linux-modules-${rel}`,
          base: `linux-base-${rel}`,
          dbg: `linux-image-${rel}-dbg`,
        }
      : {
          headers: `linux-headers-${rel}`,
          common: commonName,
          kbuild,
          image: [`linux-image-${rel}-unsigned`, `linux-image-${rel}`],
          dbg: `linux-image-${rel}-dbg`,
        };
  const paths: PackagePaths =
    line === '7.x'
      ? {
          vmlinuz: `${modulesDir}/vmlinuz.unsigned`,
          config: `${modulesDir}/config`,
          modulesDir,
          moduleExt: '.ko.xz',
          dbgSystemMap: `usr/lib/debug/lib/modules/${rel}/System.map`,
          headersVmlinux: `usr/src/linux-headers-${rel}/vmlinux`,
        }
      : {
          vmlinuz: `boot/vmlinuz-${rel}`,
          config: `boot/config-${rel}`,
          modulesDir,
          moduleExt: usrMerged ? '.ko.xz' : '.ko',
          dbgSystemMap: `usr/lib/debug/boot/System.map-${rel}`,
          headersVmlinux: usrMerged ? `usr/src/linux-headers-${rel}/vmlinux` : undefined,
        };
  return { release: rel, line, abi, abiNumber, upstream, flavour, commonName, packages, paths };
}
