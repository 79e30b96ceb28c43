// A VM made from the Docker template the way the paper makes one: a qcow2 overlay (the template is never
// written), edited offline before boot (provisioners/disk-edit.ts: restart policies so only the wanted
// containers start, the VM's own systemd-networkd address, Docker's cgroup driver), then booted.
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { cacheDir } from '../../common/cache.ts';
import { editDockerGuest, type DockerPolicyChange } from '../../provisioners/disk-edit.ts';
import { run } from '../guest-images.ts';
import { bootDockerGuest, type CgroupMode, type DockerGuest } from './boot.ts';
import { ensureDockerTemplate, type DockerTemplate } from './build.ts';
import { CGROUPFS_DAEMON_JSON, NETWORK_FILE_PATH, networkFile, SERVICES } from './recipe.ts';

export interface CloneOptions {
  name: string;
  /** v1 also switches Docker to the cgroupfs driver on the clone's disk (daemon.json) */
  cgroup?: CgroupMode;
  /** the containers that start at boot (default: all three) */
  keep?: string[];
  /** the clone's address (written to its .network file); default the template's */
  address?: string;
  /** more plain files for its disk (e.g. disk-edit.ts systemdDropIn) */
  files?: { path: string; content: string }[];
  memMiB?: number;
  smp?: number;
  log?: (m: string) => void;
  /** a private L2 segment instead of QEMU's user network (bootDockerGuest's `network`) */
  network?: { wrapper: string[]; nicArgs: string[] };
  /** passed to bootDockerGuest */
  onSpawned?: (info: { ports: Record<string, number>; t0: number }) => void;
}

export interface DockerClone {
  template: DockerTemplate;
  overlay: string;
  guest: DockerGuest;
  /** restart policies as the offline edit left them */
  policies: DockerPolicyChange[];
  /** performance.now() when the clone began (Fig. 10 measures from here) */
  t0: number;
  /** ms from t0: overlay made / disk edited */
  times: { overlayMs: number; editMs: number };
  stop(): Promise<void>;
}

export async function cloneAndBoot(o: CloneOptions): Promise<DockerClone> {
  const log = o.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const template = await ensureDockerTemplate((m) => log(`[docker-template] ${m}`));
  const t0 = performance.now();
  const dir = cacheDir('docker-guest', 'clones');
  mkdirSync(dir, { recursive: true });
  const overlay = join(dir, `${o.name}.qcow2`);
  rmSync(overlay, { force: true });
  run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', template.disk, '-F', 'qcow2', overlay]);
  const overlayMs = performance.now() - t0;
  const keep = o.keep ?? SERVICES.map((s) => s.name);
  const edit = await editDockerGuest(overlay, {
    keep,
    // a later file for the same path (e.g. direct-routing.ts's eth0 file) replaces the default one
    files: [...(o.address && !o.files?.some((f) => f.path === NETWORK_FILE_PATH) ? [{ path: NETWORK_FILE_PATH, content: networkFile(o.address) }] : []), ...(o.files ?? [])],
    ...(o.cgroup === 'v1' ? { daemon: JSON.parse(CGROUPFS_DAEMON_JSON) as Record<string, unknown> } : {}),
  });
  const editMs = performance.now() - t0;
  let guest: DockerGuest;
  try {
    guest = await bootDockerGuest({
      disk: overlay, vmlinuz: template.vmlinuz, initrd: template.initrd, name: o.name, cgroup: o.cgroup,
      memMiB: o.memMiB, smp: o.smp, address: o.address, log, onSpawned: o.onSpawned, network: o.network,
    });
  } catch (e) {
    rmSync(overlay, { force: true });
    throw e;
  }
  return {
    template,
    overlay,
    guest,
    policies: edit.result,
    t0,
    times: { overlayMs, editMs },
    async stop() {
      await guest.stop();
      rmSync(overlay, { force: true });
    },
  };
}
