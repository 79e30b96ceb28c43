// What `ciel monitor` and `ciel autoscale` do when a guest's kernel (read from its memory) has no
// monitor build yet: build it once, with progress on stderr, and say which kernel each VM is read
// with. The compiler (LLVM, ts-morph, BTF) is imported here only when a build is really needed, so a
// run whose builds exist never loads it.
import { join } from 'node:path';
import { GENERATED } from '../common/build-artifact.ts';
import { NoKernelBuildError, sourceText } from '../vmi/kernel-identity.ts';
import type { KernelChoice, SessionOptions } from '../vmi/session.ts';

/**
 * SessionOptions for a command: `provideBuild` builds a missing release once per process (a second VM
 * on the same kernel waits for the same build; a failed build is not retried at every re-attach), and
 * `onKernel` prints the kernel a VM is read with when it is first known or changes (a reboot into
 * another kernel). `say` writes one line to stderr; `vmPrefix` puts the VM name in those lines.
 */
export function kernelSessionOptions(say: (m: string) => void, vmPrefix: boolean, outRoot = GENERATED): Required<Pick<SessionOptions, 'provideBuild' | 'onKernel'>> {
  const builds = new Map<string, Promise<void>>();
  const shown = new Map<string, string>();
  const build = async (release: string, vm: string): Promise<void> => {
    say(`${vmPrefix ? `${vm}: ` : ''}no monitor build for kernel ${release} yet: building it once (Debian's packages, cached; output ${join(outRoot, release)})`);
    const t0 = performance.now();
    const { buildMonitor } = await import('../compiler/build.ts');
    await buildMonitor({ release, outRoot, log: (l) => say(`build ${release}: ${l}`) });
    say(`built the monitor for ${release} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  };
  return {
    provideBuild(release, vm) {
      let p = builds.get(release);
      if (!p) {
        p = build(release, vm);
        builds.set(release, p);
      }
      return p.catch((e: unknown) => {
        const why = e instanceof Error ? e.message : String(e);
        throw new NoKernelBuildError(
          vm,
          release,
          `the guest runs kernel ${release} (read from its memory), and no monitor can be built for it from Debian's packages: ${why}. ` +
            `For a kernel Debian does not carry, build from that kernel's own build tree (\`ciel build --kernel-dir DIR --system-map FILE\`: ` +
            `the build is named after the tree's release, which must be ${release}); \`ciel build --help\` lists the releases and flavours it can fetch`,
          { cause: e },
        );
      });
    },
    onKernel(k: KernelChoice) {
      if (shown.get(k.vm) === k.release) return;
      shown.set(k.vm, k.release);
      const where = k.given ? (k.guest ? 'given; the guest runs it' : 'given; the guest does not say') : `read from the guest: ${sourceText(k.guest!.source)}`;
      say(`${vmPrefix ? `${k.vm}: ` : ''}kernel ${k.release} (${where}${k.guest?.debianVersion ? `, Debian ${k.guest.debianVersion}` : ''})`);
    },
  };
}
