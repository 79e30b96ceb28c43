// Container images made offline, without a registry: root filesystems built here from Debian packages
// (busybox-static from the host, redis-server from the guest's own rootfs) and packed as tarballs that the
// template's first boot hands to `docker import`.
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ToolError } from '../../common/errors.ts';
import { run } from '../guest-images.ts';
import { BATCH_SCRIPT, WEB_CGI } from './recipe.ts';

const BUSYBOX = '/bin/busybox';

/** A root with busybox-static and a symlink for each applet under /bin. */
function busyboxRoot(root: string): void {
  if (!existsSync(BUSYBOX)) throw new ToolError('busybox', 'busybox-static is not installed (/bin/busybox)');
  for (const d of ['bin', 'tmp', 'etc', 'proc', 'sys', 'dev']) mkdirSync(join(root, d), { recursive: true });
  copyFileSync(BUSYBOX, join(root, 'bin/busybox'));
  chmodSync(join(root, 'bin/busybox'), 0o755);
  for (const applet of run(BUSYBOX, ['--list']).split('\n').filter(Boolean)) {
    if (applet !== 'busybox') symlinkSync('busybox', join(root, 'bin', applet));
  }
  chmodSync(join(root, 'tmp'), 0o1777);
  writeFileSync(join(root, 'etc/passwd'), 'root:x:0:0:root:/:/bin/sh\n');
  writeFileSync(join(root, 'etc/group'), 'root:x:0:\n');
}

function pack(root: string, out: string): void {
  run('tar', ['--numeric-owner', '--owner=0', '--group=0', '-C', root, '-cf', out, '.']);
}

/** Copy a file of the guest rootfs (following symlinks) into the image root at the same path. */
function copyFromRootfs(rootfs: string, root: string, path: string): void {
  const dest = join(root, path);
  mkdirSync(dirname(dest), { recursive: true });
  copyFileSync(join(rootfs, path), dest);
  chmodSync(dest, 0o755);
}

/** Shared libraries of a binary of the guest rootfs, as the rootfs's own loader resolves them. */
function rootfsLibs(rootfs: string, bin: string): string[] {
  const out = run('chroot', [rootfs, '/usr/bin/ldd', bin]);
  const libs: string[] = [];
  for (const line of out.split('\n')) {
    const m = line.match(/=>\s+(\/\S+)/) ?? line.match(/^\s+(\/\S+)\s+\(/);
    if (m) libs.push(m[1]!);
  }
  if (!libs.length) throw new ToolError('ldd', `no libraries found for ${bin} in ${rootfs}`);
  return libs;
}

/** Writes web.tar, redis.tar, batch.tar into `outDir` (which is inside the guest rootfs). */
export function buildImageTarballs(rootfs: string, outDir: string, log: (m: string) => void): Record<string, string> {
  mkdirSync(outDir, { recursive: true });
  const work = mkdtempSync(join(tmpdir(), 'ciel-docker-images-'));
  const out: Record<string, string> = {};
  try {
    // web: busybox httpd with a CPU-bound CGI
    const web = join(work, 'web');
    busyboxRoot(web);
    mkdirSync(join(web, 'www/cgi-bin'), { recursive: true });
    writeFileSync(join(web, 'www/index.html'), 'ciel web\n');
    writeFileSync(join(web, 'www/cgi-bin/work'), WEB_CGI, { mode: 0o755 });
    out.web = join(outDir, 'web.tar');
    pack(web, out.web);

    // db: Debian's redis-server binary with the libraries it links, plus busybox for a shell
    const db = join(work, 'db');
    busyboxRoot(db);
    const bin = '/usr/bin/redis-server';
    copyFromRootfs(rootfs, db, bin);
    for (const lib of rootfsLibs(rootfs, bin)) copyFromRootfs(rootfs, db, lib);
    out.db = join(outDir, 'redis.tar');
    pack(db, out.db);

    // batch: periodic checksums
    const batch = join(work, 'batch');
    busyboxRoot(batch);
    writeFileSync(join(batch, 'batch.sh'), BATCH_SCRIPT, { mode: 0o755 });
    out.batch = join(outDir, 'batch.tar');
    pack(batch, out.batch);
    log(`container images packed: ${Object.values(out).join(', ')}`);
    return out;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
