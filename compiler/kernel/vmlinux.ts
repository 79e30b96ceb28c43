// The uncompressed vmlinux of a kernel, for its BTF: Debian's vmlinuz is a bzImage whose payload is
// a compressed vmlinux (xz for amd64/rt, lz4 for cloud; zstd and gzip handled too). It is
// decompressed once with the system tool and cached in the kernel's work folder.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { BadInputError, ToolError } from '../../common/errors.ts';

const MAGICS: [string, number[]][] = [
  ['xz', [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]],
  ['zstd', [0x28, 0xb5, 0x2f, 0xfd]],
  ['gzip', [0x1f, 0x8b]],
  ['lz4', [0x02, 0x21, 0x4c, 0x18]],
  ['bzip2', [0x42, 0x5a, 0x68]],
  ['lzo', [0x89, 0x4c, 0x5a, 0x4f]],
  ['lzma', [0x5d, 0x00, 0x00]],
];

/** Locate the compressed vmlinux inside a bzImage: {format, payload}. */
export function bzImagePayload(vmlinuz: string): { format: string; payload: Buffer } {
  const img = readFileSync(vmlinuz);
  if (img.length < 0x260 || img.toString('latin1', 0x202, 0x206) !== 'HdrS') {
    throw new BadInputError(vmlinuz, 'not a bzImage (no HdrS boot header)');
  }
  const version = img.readUInt16LE(0x206);
  if (version < 0x208) throw new BadInputError(vmlinuz, `boot protocol ${version.toString(16)} too old (no payload_offset)`);
  const setupSects = img[0x1f1] || 4;
  const payloadOffset = img.readUInt32LE(0x248);
  const payloadLength = img.readUInt32LE(0x24c);
  const start = (setupSects + 1) * 512 + payloadOffset;
  if (start + payloadLength > img.length) throw new BadInputError(vmlinuz, 'payload runs past the end of the file');
  const payload = img.subarray(start, start + payloadLength);
  for (const [format, magic] of MAGICS) {
    if (magic.every((b, i) => payload[i] === b)) return { format, payload };
  }
  if (payload.readUInt32BE(0) === 0x7f454c46) return { format: 'none', payload };
  throw new BadInputError(vmlinuz, `unknown payload compression (magic ${payload.subarray(0, 6).toString('hex')})`);
}

function runFilter(tool: string, args: string[], input: Buffer, outFile: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const out = openSync(outFile, 'w');
    const child = spawn(tool, args, { stdio: ['pipe', out, 'pipe'] });
    let err = '';
    child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
    child.on('error', (e) => {
      closeSync(out);
      reject(new ToolError(tool, `cannot run (${e.message}); install it with: apt-get install -y xz-utils zstd lz4`));
    });
    child.on('close', (code) => {
      closeSync(out);
      if (code === 0) resolve();
      else reject(new ToolError(tool, `decompressing the kernel failed (exit ${code}): ${err.trim()}`));
    });
    child.stdin!.on('error', () => {
      /* reported through exit code */
    });
    child.stdin!.end(input);
  });
}

/** Decompress the vmlinux out of a bzImage into `dest` (atomic). */
export async function extractVmlinux(vmlinuz: string, dest: string): Promise<void> {
  const { format, payload } = bzImagePayload(vmlinuz);
  const tmp = `${dest}.part-${process.pid}`;
  try {
    switch (format) {
      case 'xz':
        // the kernel appends the uncompressed size after the stream: --single-stream ignores it
        await runFilter('xz', ['-dc', '--single-stream'], payload, tmp);
        break;
      case 'zstd':
        // drop the 4-byte size the kernel build appends after the frame
        await runFilter('zstd', ['-dc', '-q'], payload.subarray(0, payload.length - 4), tmp);
        break;
      case 'lz4':
        // legacy lz4 frame (cloud flavour); drop the 4-byte size the kernel build appends
        await runFilter('lz4', ['-dc'], payload.subarray(0, payload.length - 4), tmp);
        break;
      case 'gzip':
        writeFileSync(tmp, gunzipSync(payload));
        break;
      case 'none':
        writeFileSync(tmp, payload);
        break;
      default:
        throw new BadInputError(vmlinuz, `kernel payload is ${format}-compressed; Ciel handles xz, zstd, lz4 and gzip`);
    }
    const head = Buffer.alloc(4);
    const fd = openSync(tmp, 'r');
    readSync(fd, head, 0, 4, 0);
    closeSync(fd);
    if (head.readUInt32BE(0) !== 0x7f454c46) throw new BadInputError(vmlinuz, `decompressed ${format} payload is not an ELF vmlinux`);
    renameSync(tmp, dest);
  } finally {
    rmSync(tmp, { force: true });
  }
}

export interface BtfSourceTree {
  vmlinuz?: string;
  vmlinux?: string;
  workDir: string;
}

/** The path of an uncompressed vmlinux for the tree, decompressing vmlinuz into workDir once. */
export async function vmlinuxFor(tree: BtfSourceTree): Promise<string> {
  if (tree.vmlinux && existsSync(tree.vmlinux)) return tree.vmlinux;
  const cached = join(tree.workDir, 'vmlinux');
  if (!tree.vmlinuz || !existsSync(tree.vmlinuz)) throw new BadInputError(tree.vmlinuz ?? tree.workDir, 'kernel image not found (and no vmlinux with BTF)');
  if (existsSync(cached) && statSync(cached).mtimeMs >= statSync(tree.vmlinuz).mtimeMs) return cached;
  await extractVmlinux(tree.vmlinuz, cached);
  return cached;
}
