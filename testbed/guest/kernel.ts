// A guest kernel of any Debian line for the busybox test guest: the image packages fetched (cached)
// the way `ciel build` fetches them (compiler/kernel/packages.ts), so one download serves both.
import { fetchKernel } from '../../compiler/kernel/packages.ts';
import type { GuestKernel } from '../guest-images.ts';

export async function guestKernel(release: string, log: (m: string) => void = () => {}): Promise<GuestKernel> {
  const tree = await fetchKernel(release, { log, onProgress: () => {} });
  if (!tree.modulesDir) throw new Error(`no modules folder for ${release} after fetching its image`);
  return { release: tree.release, vmlinuz: tree.vmlinuz, root: tree.dir, modulesDir: tree.modulesDir };
}
