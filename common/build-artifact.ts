// The contract between `ciel build` (compiler/) and the runtime (vmi/): what generated/<release>/ holds
// and how it is read back. Reading a build pulls in nothing of the compiler (no ts-morph, no LLVM, no
// BTF parser), so `ciel monitor` and `ciel autoscale` stay lean.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BadInputError, CielError } from './errors.ts';
import { packagePath } from './package-root.ts';

/** Per-release build outputs: monitor.so, slots.json, abi.js (+ abi.ts for readers), manifest.json. */
export const GENERATED = process.env.CIEL_GENERATED ?? packagePath('generated');

export interface SlotInfo {
  index: number;
  name: string;
  kind: 'variable' | 'function';
  /** System.map address as a hex string (add the KASLR slide, unless perCpu on a kernel whose per-CPU section starts at 0: see slotAddress) */
  address: string;
  perCpu: boolean;
}

export interface BuildManifest {
  release: string;
  flavour: string;
  builtAt: string;
  compiler: string;
  packages: Record<string, string>;
  sources: string[];
  entryPoints: string[];
  coverage: { loads: number; translated: number; skippedLocal: number; memcpySources: number; ratio: number };
  layoutChecks: number;
  slots: number;
  /** System.map address of _text (unslid), for finding the KASLR slide */
  kernelText: string;
  /**
   * System.map address of `__per_cpu_start`. 0 (and absent in builds before this field) means
   * per-CPU symbols are offsets into each CPU's area and KASLR does not move them (x86-64 up to
   * 6.x); otherwise (7.x) they are addresses in the kernel image and slide with it.
   */
  perCpuStart?: string;
  timings: Record<string, number>;
}

/** The runtime address of a slot's symbol for a guest whose kernel image slid by `slide`. */
export function slotAddress(slot: SlotInfo, manifest: Pick<BuildManifest, 'perCpuStart'>, slide: bigint): bigint {
  const zeroBasedPerCpu = BigInt(manifest.perCpuStart ?? '0') === 0n;
  return slot.perCpu && zeroBasedPerCpu ? BigInt(slot.address) : BigInt(slot.address) + slide;
}

export interface BuildArtifact {
  dir: string;
  so: string;
  /** the generated ABI decoders, as plain ES module JavaScript */
  abiModule: string;
  slots: SlotInfo[];
  manifest: BuildManifest;
}

/** A release name as `ciel build` writes it: never a path (`--kernel ../../etc` must not leave generated/). */
const RELEASE_NAME = /^[0-9A-Za-z][0-9A-Za-z.+_~-]*$/;

/** True for a name `ciel build` can write a build under (no path, no control characters, at most 128 characters). */
export function isBuildName(release: string): boolean {
  return RELEASE_NAME.test(release) && release.length <= 128;
}

export function checkReleaseName(release: string): string {
  if (!isBuildName(release))
    throw new CielError(`'${release}' is not a kernel release name (e.g. 6.1.0-56-amd64)`);
  return release;
}

/** Read a build's outputs back (the runtime's view of generated/<release>/). */
export function loadBuild(release: string, outRoot = GENERATED): BuildArtifact {
  const dir = join(outRoot, checkReleaseName(release));
  const read = <T>(f: string): T => {
    try {
      return JSON.parse(readFileSync(join(dir, f), 'utf8')) as T;
    } catch {
      throw new BadInputError(join(dir, f), `missing or unreadable: run \`ciel build --kernel ${release}\` first`);
    }
  };
  const abiModule = join(dir, 'abi.js');
  if (!existsSync(abiModule)) throw new BadInputError(abiModule, `missing: rebuild with \`ciel build --kernel ${release}\``);
  const manifest = read<BuildManifest>('manifest.json');
  // a folder renamed or copied by hand: its monitor reads the kernel it was built for, not the name's
  if (manifest?.release !== release)
    throw new BadInputError(join(dir, 'manifest.json'), `holds a build for kernel ${JSON.stringify(manifest?.release)}, not ${release}: run \`ciel build --kernel ${release}\``);
  return { dir, so: join(dir, 'monitor.so'), abiModule, slots: read<SlotInfo[]>('slots.json'), manifest };
}

/** True when generated/<release>/ holds a complete build. */
export function hasBuild(release: string, outRoot = GENERATED): boolean {
  const dir = join(outRoot, checkReleaseName(release));
  return ['monitor.so', 'slots.json', 'manifest.json', 'abi.js'].every((f) => existsSync(join(dir, f)));
}
