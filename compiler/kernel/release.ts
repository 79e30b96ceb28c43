// Debian kernel release strings (`uname -r` of a Debian 12 guest) and the packages that carry
// each part of that kernel: headers (two trees), kbuild, the image (vmlinuz + .config) and the
// -dbg package (the real System.map).

import { BadInputError } from '../../common/errors.ts';

/** Kernel flavours Debian 12 builds for amd64 that Ciel knows the package layout of. */
export const FLAVOURS = ['amd64', 'cloud-amd64', 'rt-amd64'] as const;
export type Flavour = (typeof FLAVOURS)[number];

/** The 6.1 ABI numbers Ciel accepts (Debian 12 point releases and security updates). */
export const ABI_MIN = 47;
export const ABI_MAX = 56;

/** Upstream version all Debian 12 kernels are based on. */
export const UPSTREAM = '6.1.0';

export interface KernelPackages {
  /** flavour-specific generated headers + .config: `linux-headers-<release>` */
  headers: string;
  /** the headers shared by all flavours of one ABI: `linux-headers-6.1.0-N-common[-rt]` */
  common: string;
  /** kbuild tools (one package per upstream series) */
  kbuild: string;
  /** image candidates, first that apt knows wins: the unsigned image, then the signed one */
  image: string[];
  /** debug symbols; the only package with the real System.map */
  dbg: string;
}

export interface KernelRelease {
  /** the full release string, e.g. `6.1.0-56-amd64` */
  release: string;
  /** ABI string as used in package names, e.g. `6.1.0-56` */
  abi: string;
  /** ABI number, e.g. 56 */
  abiNumber: number;
  flavour: Flavour;
  /** `linux-headers-<abi>-common` or `-common-rt` directory / package suffix */
  commonName: string;
  packages: KernelPackages;
}

function acceptedText(): string {
  return (
    `accepted: ${UPSTREAM}-N-FLAVOUR with N in ${ABI_MIN}..${ABI_MAX} and FLAVOUR one of ` +
    `${FLAVOURS.join(', ')} (e.g. ${UPSTREAM}-${ABI_MAX}-amd64, ${UPSTREAM}-${ABI_MIN}-cloud-amd64, ` +
    `${UPSTREAM}-${ABI_MAX}-rt-amd64)`
  );
}

/** Parse a Debian 12 kernel release string. Throws BadInputError (listing what is accepted) otherwise. */
export function parseRelease(release: string): KernelRelease {
  const m = /^(\d+\.\d+\.\d+)-(\d+)-([a-z0-9-]+)$/.exec(release.trim());
  if (!m) {
    throw new BadInputError('--kernel', `'${release}' is not a Debian kernel release string; ${acceptedText()}`);
  }
  const [, upstream, abiStr, flavourStr] = m as unknown as [string, string, string, string];
  if (upstream !== UPSTREAM) {
    throw new BadInputError('--kernel', `kernel ${upstream} of '${release}' is not supported; ${acceptedText()}`);
  }
  const abiNumber = Number(abiStr);
  if (abiNumber < ABI_MIN || abiNumber > ABI_MAX) {
    throw new BadInputError('--kernel', `ABI ${abiNumber} of '${release}' is not supported; ${acceptedText()}`);
  }
  if (!(FLAVOURS as readonly string[]).includes(flavourStr)) {
    throw new BadInputError('--kernel', `flavour '${flavourStr}' of '${release}' is not supported; ${acceptedText()}`);
  }
  const flavour = flavourStr as Flavour;
  const abi = `${UPSTREAM}-${abiNumber}`;
  const rel = `${abi}-${flavour}`;
  const commonName = `linux-headers-${abi}-common${flavour === 'rt-amd64' ? '-rt' : ''}`;
  const series = UPSTREAM.split('.').slice(0, 2).join('.');
  return {
    release: rel,
    abi,
    abiNumber,
    flavour,
    commonName,
    packages: {
      headers: `linux-headers-${rel}`,
      common: commonName,
      kbuild: `linux-kbuild-${series}`,
      image: [`linux-image-${rel}-unsigned`, `linux-image-${rel}`],
      dbg: `linux-image-${rel}-dbg`,
    },
  };
}
