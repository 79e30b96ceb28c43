// Where the ext2/3/4 filesystems of a disk (its raw view) start: the whole disk, MBR primary and
// logical partitions, GPT partitions. Reads a handful of sectors; never writes.

import { type FileHandle, open } from 'node:fs/promises';
import { BadInputError } from '../common/errors.ts';

export interface FsLocation {
  /** byte offset of the filesystem in the raw disk view */
  offset: number;
  /** where it was found: 'whole disk', 'MBR partition 1', 'MBR logical partition 5', 'GPT partition 2' */
  where: string;
  /** filesystem size in bytes according to its superblock */
  size: number;
  /** volume label, if any */
  label: string;
}

const EXT_MAGIC = 0xef53;
/** Linux mounts at most this many partitions per disk; bounds the EBR chain of a hostile disk */
const MAX_LOGICAL = 128;

async function readAt(fh: FileHandle, pos: number, len: number): Promise<Buffer> {
  const b = Buffer.alloc(len);
  const { bytesRead } = await fh.read(b, 0, len, pos);
  return b.subarray(0, bytesRead);
}

/** The ext2/3/4 superblock at `offset`, or null. */
async function extAt(fh: FileHandle, offset: number, diskSize: number): Promise<{ size: number; label: string } | null> {
  if (offset < 0 || offset + 2048 > diskSize) return null;
  const sb = await readAt(fh, offset + 1024, 1024);
  if (sb.length < 1024 || sb.readUInt16LE(56) !== EXT_MAGIC) return null;
  const logBlock = sb.readUInt32LE(24);
  if (logBlock > 6) return null; // block size > 64 KiB: not a real superblock
  const blocksLo = sb.readUInt32LE(4);
  const incompat = sb.readUInt32LE(96);
  const blocksHi = incompat & 0x80 ? sb.readUInt32LE(0x150) : 0; // INCOMPAT_64BIT
  const size = (blocksHi * 2 ** 32 + blocksLo) * (1024 << logBlock);
  const label = sb.subarray(120, 136).toString('latin1').replace(/\0.*$/s, '');
  return { size, label };
}

/**
 * Find the ext filesystems of the disk image (raw view) at `path`.
 * Throws BadInputError when none is found.
 */
export async function findExtFilesystems(path: string): Promise<FsLocation[]> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    throw new BadInputError(path, `cannot open the disk image: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  try {
    const st = await fh.stat();
    // a block device (an LVM volume, /dev/nbd0) has st.size 0: bound reads by what read() returns instead
    const diskSize = st.isBlockDevice() ? Number.MAX_SAFE_INTEGER : st.size;
    const found: FsLocation[] = [];
    const tried: string[] = [];
    const check = async (offset: number, where: string) => {
      tried.push(where);
      const e = await extAt(fh, offset, diskSize);
      if (e) found.push({ offset, where, ...e });
    };

    await check(0, 'whole disk');
    if (found.length) return found;

    const mbr = await readAt(fh, 0, 512);
    if (mbr.length === 512 && mbr[510] === 0x55 && mbr[511] === 0xaa) {
      const entries = [0, 1, 2, 3].map((i) => {
        const e = mbr.subarray(446 + 16 * i, 462 + 16 * i);
        return { n: i + 1, type: e[4], start: e.readUInt32LE(8), count: e.readUInt32LE(12) };
      });
      if (entries.some((e) => e.type === 0xee)) {
        // protective MBR: GPT, with 512- or 4096-byte sectors
        for (const sector of [512, 4096]) {
          const hdr = await readAt(fh, sector, 92);
          if (hdr.length < 92 || hdr.subarray(0, 8).toString('latin1') !== 'EFI PART') continue;
          const entryLba = Number(hdr.readBigUInt64LE(72));
          const num = Math.min(hdr.readUInt32LE(80), 1024);
          const esize = hdr.readUInt32LE(84);
          if (esize < 128 || esize > 4096 || entryLba * sector >= diskSize) break;
          const table = await readAt(fh, entryLba * sector, num * esize);
          for (let i = 0; i * esize + 48 <= table.length; i++) {
            const e = table.subarray(i * esize, (i + 1) * esize);
            if (e.subarray(0, 16).every((x) => x === 0)) continue; // unused entry
            await check(Number(e.readBigUInt64LE(32)) * sector, `GPT partition ${i + 1}`);
          }
          break;
        }
      } else {
        for (const e of entries) {
          if (e.type === 0 || e.count === 0) continue;
          if (e.type === 0x05 || e.type === 0x0f || e.type === 0x85) {
            // extended partition: a chain of EBRs, each with one logical partition and a link to the next
            const base = e.start;
            let ebr = base;
            for (let n = 5; n < 5 + MAX_LOGICAL; n++) {
              const b = await readAt(fh, ebr * 512, 512);
              if (b.length < 512 || b[510] !== 0x55 || b[511] !== 0xaa) break;
              const rel = b.readUInt32LE(446 + 8);
              if (b[446 + 4] !== 0 && rel !== 0) await check((ebr + rel) * 512, `MBR logical partition ${n}`);
              const next = b.readUInt32LE(462 + 8);
              if (b[462 + 4] === 0 || next === 0) break;
              ebr = base + next;
            }
            continue;
          }
          await check(e.start * 512, `MBR partition ${e.n}`);
        }
      }
    }
    if (!found.length)
      throw new BadInputError(
        path,
        `no ext2/3/4 filesystem found (looked at: ${tried.join(', ')}; LVM, LUKS, btrfs and xfs are not supported)`,
      );
    return found;
  } finally {
    await fh.close();
  }
}
