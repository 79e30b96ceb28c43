// Reading single files out of a .deb without unpacking all of it.
//
// A .deb is an `ar` archive holding debian-binary, control.tar.* and data.tar.{xz,zst,gz}. We read
// the ar member table ourselves, stream the data member through the system decompressor (xz /
// zstd) or node's zlib, walk the tar stream and write only the wanted members. As soon as all of
// them were seen we stop the decompressor: System.map sits in the first 1.2 MiB of the 0.8-1.1 GB
// -dbg packages, so this takes a fraction of a second instead of a full decompression (~6 s for
// the 70 MB image package, much more for -dbg).

import { spawn } from 'node:child_process';
import { closeSync, createReadStream, createWriteStream, mkdirSync, openSync, readSync, renameSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { createGunzip } from 'node:zlib';
import { Readable, type Writable } from 'node:stream';
import { BadInputError, ToolError } from '../../common/errors.ts';

export interface ArMember {
  name: string;
  /** byte offset of the member's data inside the .deb */
  offset: number;
  size: number;
}

/** List the members of an ar archive (a .deb). */
export function arMembers(file: string): ArMember[] {
  const fd = openSync(file, 'r');
  try {
    const magic = Buffer.alloc(8);
    if (readSync(fd, magic, 0, 8, 0) !== 8 || magic.toString('latin1') !== '!<arch>\n') {
      throw new BadInputError(file, 'not a .deb (ar archive magic missing)');
    }
    const members: ArMember[] = [];
    const hdr = Buffer.alloc(60);
    let pos = 8;
    for (;;) {
      const n = readSync(fd, hdr, 0, 60, pos);
      if (n === 0) break;
      if (n !== 60 || hdr.toString('latin1', 58, 60) !== '`\n') {
        throw new BadInputError(file, `corrupt ar header at byte ${pos}`);
      }
      const name = hdr.toString('latin1', 0, 16).trim().replace(/\/$/, '');
      const size = Number.parseInt(hdr.toString('latin1', 48, 58).trim(), 10);
      members.push({ name, offset: pos + 60, size });
      pos += 60 + size + (size % 2);
    }
    return members;
  } finally {
    closeSync(fd);
  }
}

export interface ExtractOptions {
  /** called with (compressed bytes read, compressed total) */
  onBytes?: (done: number, total: number) => void;
}

export interface ExtractResult {
  /** member name (as in the tar, e.g. `./boot/vmlinuz-...`) -> written file */
  written: Map<string, string>;
  /** compressed bytes read before every wanted member was found */
  compressedRead: number;
  compressedTotal: number;
}

/** Normalise a tar member name to the `./a/b` form dpkg uses. */
function norm(name: string): string {
  let n = name.replace(/^\.?\/+/, '');
  n = n.replace(/\/+$/, '');
  return `./${n}`;
}

/**
 * Extract the listed members of a .deb's data archive. `wanted` maps a member name (`./usr/...`)
 * to the destination file. Each destination is written to a temporary name and renamed when
 * complete. Throws BadInputError naming the members that are not in the package.
 */
export async function extractDebMembers(
  deb: string,
  wanted: Map<string, string>,
  opts: ExtractOptions = {},
): Promise<ExtractResult> {
  const data = arMembers(deb).find((m) => m.name.startsWith('data.tar'));
  if (!data) throw new BadInputError(deb, 'no data.tar member');
  return extractDataMembers(deb, data, createReadStream(deb, { start: data.offset, end: data.offset + data.size - 1 }), wanted, opts);
}

/** The first request: the ar table and a -dbg package's control member (~100 KiB) in one round trip. */
const HEAD_WINDOW = 256 * 1024;
// The data member is read in bounded Range windows, 2 MiB growing to 32 MiB: on deb.debian.org a
// bounded range answered in 0.1-0.5 s, one open to the end of the 1.1 GB 7.3.4 -dbg in 4.8-5.2 s.
const FIRST_WINDOW = 2 * 1024 * 1024;
const MAX_WINDOW = 32 * 1024 * 1024;

/**
 * The same for a .deb on an HTTP server, read with Range requests: the ar member table (one request),
 * then the data member in bounded windows until every wanted member was seen: at most the window
 * holding the last one is downloaded (System.map is within the first 1.2 MiB of the -dbg packages).
 */
export async function extractRemoteDebMembers(
  url: string,
  wanted: Map<string, string>,
  opts: ExtractOptions = {},
): Promise<ExtractResult> {
  const range = async (start: number, end: number): Promise<Response> => {
    let r: Response;
    try {
      r = await fetch(url, { headers: { Range: `bytes=${start}-${end}` } });
    } catch (e) {
      throw new ToolError('http', `cannot fetch ${url}: ${(e as Error).message}`);
    }
    if (r.status !== 206) {
      await r.body?.cancel();
      const why = r.status === 404 ? 'the mirror does not serve it (404), although its package lists name it' : `expected 206 Partial Content for bytes ${start}-${end}, got ${r.status}`;
      throw new ToolError('http', `${url}: ${why}`);
    }
    return r;
  };
  let head = Buffer.alloc(0);
  let headAt = 0;
  const bytes = async (start: number, len: number): Promise<Buffer> => {
    if (start < headAt || start + len > headAt + head.length) {
      headAt = start;
      head = Buffer.from(await (await range(start, start + Math.max(len, HEAD_WINDOW) - 1)).arrayBuffer());
    }
    return head.subarray(start - headAt, start - headAt + len);
  };
  if ((await bytes(0, 8)).toString('latin1') !== '!<arch>\n') throw new BadInputError(url, 'not a .deb (ar archive magic missing)');
  let pos = 8;
  let data: ArMember | undefined;
  for (let i = 0; i < 8 && !data; i++) {
    const hdr = await bytes(pos, 60);
    if (hdr.length !== 60 || hdr.toString('latin1', 58, 60) !== '`\n') throw new BadInputError(url, `corrupt ar header at byte ${pos}`);
    const name = hdr.toString('latin1', 0, 16).trim().replace(/\/$/, '');
    const size = Number.parseInt(hdr.toString('latin1', 48, 58).trim(), 10);
    if (name.startsWith('data.tar')) data = { name, offset: pos + 60, size };
    pos += 60 + size + (size % 2);
  }
  if (!data) throw new BadInputError(url, 'no data.tar member');
  const member = data;
  async function* windows(): AsyncGenerator<Buffer> {
    const end = member.offset + member.size - 1;
    let at = member.offset;
    for (let size = FIRST_WINDOW; at <= end; size = Math.min(size * 2, MAX_WINDOW)) {
      const stop = Math.min(end, at + size - 1);
      const body = (await range(at, stop)).body;
      if (!body) throw new ToolError('http', `${url}: empty response for bytes ${at}-${stop}`);
      const reader = body.getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          at += value.length;
          yield Buffer.from(value.buffer, value.byteOffset, value.byteLength);
        }
      } finally {
        await reader.cancel().catch(() => {}); // stopped early: drop the rest of this window
      }
      if (at <= stop) throw new ToolError('http', `${url}: bytes ${at}-${stop} missing from the response`);
    }
  }
  return extractDataMembers(url, data, Readable.from(windows(), { objectMode: false }), wanted, opts);
}

async function extractDataMembers(
  deb: string,
  data: ArMember,
  src: Readable,
  wanted: Map<string, string>,
  opts: ExtractOptions,
): Promise<ExtractResult> {
  const want = new Map<string, string>();
  for (const [k, v] of wanted) want.set(norm(k), v);

  let decompressed: Readable;
  let child: ReturnType<typeof spawn> | undefined;
  let childErr = '';
  const comp = data.name.slice('data.tar'.length);
  if (comp === '.xz' || comp === '.zst') {
    const tool = comp === '.xz' ? 'xz' : 'zstd';
    child = spawn(tool, ['-dc'], { stdio: ['pipe', 'pipe', 'pipe'] });
    child.stderr!.on('data', (b: Buffer) => (childErr += b.toString()));
    src.pipe(child.stdin as Writable);
    (child.stdin as Writable).on('error', () => {
      /* EPIPE when we stop early */
    });
    decompressed = child.stdout as Readable;
  } else if (comp === '.gz') {
    decompressed = src.pipe(createGunzip());
  } else if (comp === '') {
    decompressed = src;
  } else {
    throw new BadInputError(deb, `unsupported data archive compression ${data.name}`);
  }

  let compressedRead = 0;
  src.on('data', (b: Buffer | string) => {
    compressedRead += b.length;
    opts.onBytes?.(compressedRead, data.size);
  });

  const written = new Map<string, string>();
  const childExit =
    child &&
    new Promise<number | null>((resolve, reject) => {
      child!.on('error', (e) =>
        reject(new ToolError(child!.spawnfile, `cannot run (${e.message}); install it with: apt-get install -y xz-utils zstd`)),
      );
      child!.on('close', (code) => resolve(code));
    });
  childExit?.catch(() => {
    /* awaited below; keeps an early spawn failure from being an unhandled rejection */
  });

  // Tar walk. Headers are 512-byte blocks; data is padded to 512.
  let buf: Buffer = Buffer.alloc(0);
  let state: 'header' | 'data' | 'skip' = 'header';
  let remaining = 0; // bytes of current member data left
  let padding = 0;
  let out: ReturnType<typeof createWriteStream> | undefined;
  let outTmp = '';
  let outFinal = '';
  let outMember = '';
  let longName: string | undefined;
  let paxPath: string | undefined;
  let metaKind: 'L' | 'x' | undefined;
  let metaBuf: Buffer[] = [];
  let finished = false;
  const pendingWrites: Promise<void>[] = [];

  const closeOut = (): void => {
    if (!out) return;
    const o = out;
    const tmp = outTmp;
    const fin = outFinal;
    const member = outMember;
    pendingWrites.push(
      new Promise<void>((resolve, reject) => {
        o.on('error', reject);
        o.end(() => {
          renameSync(tmp, fin);
          written.set(member, fin);
          resolve();
        });
      }),
    );
    out = undefined;
  };

  const parseOctal = (b: Buffer, start: number, len: number): number => {
    // GNU base-256 for big sizes
    if (b[start]! & 0x80) {
      let v = 0;
      for (let i = start + 1; i < start + len; i++) v = v * 256 + b[i]!;
      return v;
    }
    const s = b.toString('latin1', start, start + len).replace(/\0.*$/s, '').trim();
    return s ? Number.parseInt(s, 8) : 0;
  };
  const cstr = (b: Buffer, start: number, len: number): string => {
    const end = b.indexOf(0, start);
    return b.toString('utf8', start, end >= 0 && end < start + len ? end : start + len);
  };

  const onHeader = (h: Buffer): boolean => {
    // returns false at end of archive
    if (h.every((x) => x === 0)) return false;
    const size = parseOctal(h, 124, 12);
    const type = String.fromCharCode(h[156]!);
    let name = cstr(h, 0, 100);
    if (h.toString('latin1', 257, 262) === 'ustar') {
      const prefix = cstr(h, 345, 155);
      if (prefix) name = `${prefix}/${name}`;
    }
    if (longName !== undefined) name = longName;
    if (paxPath !== undefined) name = paxPath;
    remaining = size;
    padding = (512 - (size % 512)) % 512;
    if (type === 'L' || type === 'x') {
      metaKind = type;
      metaBuf = [];
      state = 'data';
      return true;
    }
    longName = undefined;
    paxPath = undefined;
    metaKind = undefined;
    const key = norm(name);
    const dest = want.get(key);
    if (dest && (type === '0' || type === '\0' || type === '7')) {
      mkdirSync(dirname(dest), { recursive: true });
      outTmp = `${dest}.part-${process.pid}`;
      outFinal = dest;
      outMember = key;
      out = createWriteStream(outTmp);
      want.delete(key);
      state = 'data';
      if (remaining === 0) {
        closeOut();
        state = 'header';
        if (want.size === 0) finished = true;
      }
    } else {
      state = remaining + padding > 0 ? 'skip' : 'header';
    }
    return true;
  };

  await new Promise<void>((resolve, reject) => {
    const stop = (): void => {
      finished = true;
      decompressed.removeAllListeners('data');
      src.destroy();
      child?.kill('SIGTERM');
      resolve();
    };
    decompressed.on('error', reject);
    src.on('error', reject);
    decompressed.on('data', (chunk: Buffer) => {
      if (finished) return;
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      let pos = 0;
      while (!finished) {
        if (state === 'header') {
          if (buf.length - pos < 512) break;
          const more = onHeader(buf.subarray(pos, pos + 512));
          pos += 512;
          if (!more) {
            finished = true;
            break;
          }
        } else if (state === 'data') {
          const take = Math.min(remaining, buf.length - pos);
          if (take > 0) {
            const piece = buf.subarray(pos, pos + take);
            if (metaKind) metaBuf.push(Buffer.from(piece));
            else out!.write(Buffer.from(piece));
            pos += take;
            remaining -= take;
          }
          if (remaining > 0) break;
          if (metaKind) {
            const text = Buffer.concat(metaBuf).toString('utf8');
            if (metaKind === 'L') longName = text.replace(/\0.*$/s, '');
            else {
              const m = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(text);
              if (m) paxPath = m[1];
            }
            metaKind = undefined;
          } else {
            closeOut();
            if (want.size === 0) {
              finished = true;
              break;
            }
          }
          remaining = padding;
          padding = 0;
          state = remaining > 0 ? 'skip' : 'header';
        } else {
          const skipTotal = remaining + padding;
          const take = Math.min(skipTotal, buf.length - pos);
          pos += take;
          const left = skipTotal - take;
          if (left > 0) {
            // keep the split between data and padding irrelevant: both are skipped
            remaining = left;
            padding = 0;
            break;
          }
          remaining = 0;
          padding = 0;
          state = 'header';
        }
      }
      buf = buf.subarray(pos);
      if (finished) stop();
    });
    decompressed.on('end', () => {
      if (!finished) stop();
    });
  });

  const code = childExit ? await childExit : 0;
  await Promise.all(pendingWrites);
  if (out) {
    // archive ended in the middle of a member
    rmSync(outTmp, { force: true });
    throw new BadInputError(deb, `truncated data archive while reading ${outMember}`);
  }
  if (want.size > 0) {
    if (child && code !== 0 && code !== null) {
      throw new ToolError(child.spawnfile, `failed on ${deb} (exit ${code}): ${childErr.trim()}`);
    }
    throw new BadInputError(deb, `package has no member(s) ${[...want.keys()].join(', ')}`);
  }
  return { written, compressedRead, compressedTotal: data.size };
}

/** Convenience: extract one member to a file. */
export async function extractDebMember(deb: string, member: string, dest: string, opts: ExtractOptions = {}): Promise<ExtractResult> {
  return extractDebMembers(deb, new Map([[member, dest]]), opts);
}

