// Builds the real Docker guest template into the cache, once per recipe:
//  1. mmdebstrap (minbase, Debian 12) with systemd, docker.io and redis-server; the guest kernel's own .deb
//     is dpkg -i'd inside (its postinst makes the initramfs with the virtio modules);
//  2. Ciel's files: control channel unit on ttyS1, systemd-networkd identity, fstab; the container image
//     tarballs (images.ts);
//  3. ext4 from the rootfs (mkfs.ext4 -d, nothing mounted) -> qcow2;
//  4. first boot: `docker import` the images, `docker run -d --restart always` the three services, wait
//     until they answer, clean poweroff. The result is a VM as a user would have it.
// Progress goes to `log`; `tsx testbed/docker-guest/build.ts` builds it by hand.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cacheDir } from '../../common/cache.ts';
import { ToolError } from '../../common/errors.ts';
import { ensureImageDeb, KERNEL_RELEASE, run } from '../guest-images.ts';
import { bootDockerGuest, waitServing } from './boot.ts';
import { buildImageTarballs } from './images.ts';
import {
  BATCH_SCRIPT, CTL_SCRIPT, CTL_UNIT, GUEST_PACKAGES, IMAGE_DIR, NETWORK_FILE_PATH, networkFile, SERVICES, SUITE,
  TEMPLATE_ADDRESS, WEB_CGI,
} from './recipe.ts';

const BUILDER_VERSION = '1';
const HOST_SOURCES = '/etc/apt/sources.list.d/debian.sources';

export interface DockerTemplate {
  dir: string;
  key: string;
  /** qcow2 with the three services created (restart policy always); use overlays of it, never write it */
  disk: string;
  vmlinuz: string;
  initrd: string;
  /** container id per service name, as Docker named them at the first boot */
  ids: Record<string, string>;
  /** image id per service name */
  imageIds: Record<string, string>;
  built: boolean;
}

function recipeKey(kernelDeb: string): string {
  const h = createHash('sha256');
  h.update(BUILDER_VERSION);
  h.update(SUITE);
  h.update(GUEST_PACKAGES.join(' '));
  h.update(CTL_SCRIPT + CTL_UNIT + networkFile(TEMPLATE_ADDRESS) + WEB_CGI + BATCH_SCRIPT);
  h.update(JSON.stringify(SERVICES));
  h.update(basename(kernelDeb));
  h.update(readFileSync(fileURLToPath(new URL('./images.ts', import.meta.url))));
  return h.digest('hex').slice(0, 16);
}

/** Run a tool, streaming its lines to `log` (mmdebstrap takes minutes). */
function stream(tool: string, args: string[], log: (m: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(tool, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let tail = '';
    const onData = (d: Buffer) => {
      const s = d.toString('utf8');
      tail = (tail + s).slice(-4000);
      for (const l of s.split('\n')) if (/^I: |^E: |^W: /.test(l.trim())) log(`${tool}: ${l.trim()}`);
    };
    p.stdout.on('data', onData);
    p.stderr.on('data', onData);
    p.on('error', (e) => reject(new ToolError(tool, e.message)));
    p.on('close', (code) => (code === 0 ? resolve() : reject(new ToolError(tool, `exit code ${code}: ${tail.trim().split('\n').slice(-15).join('\n')}`))));
  });
}

function ensureMmdebstrap(log: (m: string) => void): void {
  try {
    run('mmdebstrap', ['--version']);
  } catch {
    log('installing mmdebstrap with apt-get');
    run('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'mmdebstrap']);
  }
}

/** Ciel's files in the rootfs: control channel, network identity, fstab, hostname, a masked host redis. */
function addGuestFiles(rootfs: string): void {
  const w = (p: string, content: string, mode = 0o644) => {
    mkdirSync(join(rootfs, p, '..'), { recursive: true });
    writeFileSync(join(rootfs, p), content, { mode });
  };
  const link = (target: string, p: string) => {
    mkdirSync(join(rootfs, p, '..'), { recursive: true });
    rmSync(join(rootfs, p), { force: true });
    symlinkSync(target, join(rootfs, p));
  };
  w('/usr/local/sbin/ciel-ctl', CTL_SCRIPT, 0o755);
  w('/etc/systemd/system/ciel-ctl.service', CTL_UNIT);
  link('/etc/systemd/system/ciel-ctl.service', '/etc/systemd/system/multi-user.target.wants/ciel-ctl.service');
  w(NETWORK_FILE_PATH, networkFile(TEMPLATE_ADDRESS));
  link('/lib/systemd/system/systemd-networkd.service', '/etc/systemd/system/multi-user.target.wants/systemd-networkd.service');
  link('/lib/systemd/system/systemd-networkd.socket', '/etc/systemd/system/sockets.target.wants/systemd-networkd.socket');
  w('/etc/fstab', '/dev/vda / ext4 rw,errors=remount-ro 0 1\n');
  w('/etc/hostname', 'ciel-docker\n');
  w('/etc/hosts', '127.0.0.1 localhost\n127.0.1.1 ciel-docker\n');
  // redis-server comes in for the db image; the VM itself runs it only inside the container
  link('/dev/null', '/etc/systemd/system/redis-server.service');
  // no time spent on timers that reach for the network
  for (const t of ['apt-daily.timer', 'apt-daily-upgrade.timer', 'e2scrub_all.timer', 'fstrim.timer']) link('/dev/null', `/etc/systemd/system/${t}`);
  rmSync(join(rootfs, 'etc/machine-id'), { force: true });
  writeFileSync(join(rootfs, 'etc/machine-id'), ''); // a fresh id at first boot
}

export async function ensureDockerTemplate(log: (m: string) => void = () => {}): Promise<DockerTemplate> {
  const kernelDeb = ensureImageDeb(log);
  const key = recipeKey(kernelDeb);
  const dir = join(cacheDir('docker-guest'), `template-${key}`);
  const metaPath = join(dir, 'template.json');
  if (existsSync(metaPath)) return { ...(JSON.parse(readFileSync(metaPath, 'utf8')) as DockerTemplate), built: false };

  const t0 = performance.now();
  const since = () => `${((performance.now() - t0) / 1000).toFixed(0)} s`;
  // steps 1-3 end in a stage kept beside the template: a failed first boot does not cost the rootfs again
  const stageDir = `${dir}.stage`;
  const stageDisk = join(stageDir, 'disk.qcow2');
  const vmlinuzName = `vmlinuz-${KERNEL_RELEASE}`;
  const initrdName = `initrd.img-${KERNEL_RELEASE}`;
  if (!existsSync(join(stageDir, 'stage.done'))) await buildStage(stageDir, kernelDeb, log, since);
  else log(`reusing the stage disk ${stageDisk}`);

  log(`[4/4] first boot: import images, create the services (${since()})`);
  const work = `${dir}.tmp-${process.pid}`;
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  try {
    // the first boot writes into an overlay; the template is that overlay flattened
    const overlay = join(work, 'firstboot.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', stageDisk, '-F', 'qcow2', overlay]);
    const g = await bootDockerGuest({ disk: overlay, vmlinuz: join(stageDir, vmlinuzName), initrd: join(stageDir, initrdName), name: `dtpl-${process.pid}`, log });
    const ids: Record<string, string> = {};
    const imageIds: Record<string, string> = {};
    try {
      await g.must('until systemctl is-active -q docker; do sleep 1; done', 300_000);
      log(`dockerd active (${since()})`);
      for (const s of SERVICES) {
        const tar = s.name === 'db' ? 'redis.tar' : `${s.name}.tar`;
        imageIds[s.name] = (await g.must(`docker import ${IMAGE_DIR}/${tar} ${s.image}`, 300_000)).trim().split('\n').pop()!;
        log(`imported ${s.image}: ${imageIds[s.name]}`);
      }
      await g.must(`rm -rf ${IMAGE_DIR}`);
      for (const s of SERVICES) {
        ids[s.name] = (await g.must(`docker run -d --name ${s.name} --restart always ${s.run.map(shq).join(' ')}`, 300_000)).trim().split('\n').pop()!;
        log(`started ${s.name}: ${ids[s.name]} (${since()})`);
      }
      await waitServing(g, SERVICES.map((s) => s.name), 300_000);
      log(`all services answer (${since()})`);
      await g.must('sync');
      if (!(await g.poweroff(180_000))) throw new ToolError('qemu', 'the template did not power off cleanly: its disk is not kept');
    } finally {
      await g.stop();
    }
    for (const [n, id] of Object.entries(ids)) if (!/^[0-9a-f]{64}$/.test(id)) throw new ToolError('docker', `container id of ${n}: ${JSON.stringify(id)}`);
    mkdirSync(dir, { recursive: true });
    const disk = join(dir, 'disk.qcow2');
    log(`flattening the first boot into ${disk} (${since()})`);
    run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'qcow2', overlay, join(work, 'flat.qcow2')]);
    renameSync(join(work, 'flat.qcow2'), disk);
    const vmlinuz = join(dir, vmlinuzName);
    const initrd = join(dir, initrdName);
    copyFileSync(join(stageDir, vmlinuzName), vmlinuz);
    copyFileSync(join(stageDir, initrdName), initrd);
    const meta: DockerTemplate = { dir, key, disk, vmlinuz, initrd, ids, imageIds, built: true };
    writeFileSync(metaPath, JSON.stringify(meta, null, 1));
    rmSync(stageDir, { recursive: true, force: true });
    log(`template ready in ${since()}: ${dir}`);
    return meta;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** Steps 1-3: rootfs, Ciel's files and images, ext4 -> qcow2, kernel and initramfs beside it. */
async function buildStage(stageDir: string, kernelDeb: string, log: (m: string) => void, since: () => string): Promise<void> {
  rmSync(stageDir, { recursive: true, force: true });
  mkdirSync(stageDir, { recursive: true });
  ensureMmdebstrap(log);
  const rootfs = join(stageDir, 'rootfs');
  log(`[1/4] mmdebstrap ${SUITE} minbase + ${GUEST_PACKAGES.length} packages + ${basename(kernelDeb)} into ${rootfs}`);
  await stream(
    'mmdebstrap',
    [
      '--variant=minbase', '--mode=root', '--aptopt=APT::Install-Recommends "false"',
      `--include=${GUEST_PACKAGES.join(',')}`,
      `--customize-hook=copy-in ${kernelDeb} /tmp`,
      `--customize-hook=chroot "$1" dpkg -i /tmp/${basename(kernelDeb)}`,
      `--customize-hook=rm -f "$1"/tmp/${basename(kernelDeb)}`,
      '--customize-hook=chroot "$1" apt-get clean',
      SUITE, rootfs, HOST_SOURCES,
    ],
    log,
  );
  log(`[1/4] rootfs done (${since()})`);
  log('[2/4] guest files and container images');
  addGuestFiles(rootfs);
  buildImageTarballs(rootfs, join(rootfs, IMAGE_DIR), log);
  for (const f of [`vmlinuz-${KERNEL_RELEASE}`, `initrd.img-${KERNEL_RELEASE}`]) copyFileSync(join(rootfs, 'boot', f), join(stageDir, f));
  log(`[3/4] ext4 from the rootfs, then qcow2 (${since()})`);
  const raw = join(stageDir, 'disk.raw');
  run('mkfs.ext4', ['-q', '-F', '-d', rootfs, '-L', 'root', raw, '4G']);
  rmSync(rootfs, { recursive: true, force: true });
  run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, join(stageDir, 'disk.qcow2')]);
  rmSync(raw, { force: true });
  writeFileSync(join(stageDir, 'stage.done'), `${since()}\n`);
}

function shq(s: string): string {
  return /^[A-Za-z0-9_./:=,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const t = await ensureDockerTemplate((m) => console.error(`[docker-template] ${m}`));
  console.log(JSON.stringify(t, null, 1));
}
