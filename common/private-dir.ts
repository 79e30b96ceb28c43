// Folders that hold guest memory and handles on a VM (RAM files, memory snapshots, disk overlays, QMP and
// control sockets): readable by their owner only. QEMU creates its memory-backend-file 0644, so the file's
// own mode is not enough; a 0700 folder keeps every other local user from reaching what is inside.
import { chmodSync, lstatSync, mkdirSync } from 'node:fs';
import { CielError } from './errors.ts';

export class PrivateDirError extends CielError {
  constructor(
    readonly dir: string,
    detail: string,
  ) {
    super(`${dir}: ${detail}`);
  }
}

/** Create `dir` (0700) or tighten it to 0700; refuse a symlink or a folder someone else owns. */
export function ensurePrivateDir(dir: string): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  if (!st.isDirectory()) throw new PrivateDirError(dir, 'is not a folder (a symlink or a file is never used for guest memory)');
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) throw new PrivateDirError(dir, `belongs to uid ${st.uid}, not to this user (uid ${uid})`);
  if ((st.mode & 0o777) !== 0o700) chmodSync(dir, 0o700);
  return dir;
}

/** The default folder for guest-RAM files: tmpfs, one private folder per user. */
export function privateShmDir(): string {
  return ensurePrivateDir(`/dev/shm/ciel-${process.getuid?.() ?? 'user'}`);
}
