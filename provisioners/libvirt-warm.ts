// Warm start under libvirt: restoring many NEW domains from one `virsh save` image. This file is the
// save image format and the making of a clone's image; the libvirt backend (libvirt.ts) uses it, it
// knows nothing of the backend.
//
// Why not `virsh restore FILE --xml NEW.xml` (or `save-image-define`): libvirt 9.0 checks the given XML
// for ABI stability against the one in the image and refuses every identity change a clone needs
// (measured here):
//   new name:         error: unsupported configuration: Target domain name 'lvexp-c1' does not match source 'lvexp-warm'
//   UUID dropped/new: error: unsupported configuration: Target domain uuid 11111111-2222-3333-4444-555555555555
//                     does not match source 90f1e976-4141-4031-974a-8364688ea153
//   new MAC:          error: unsupported configuration: Target network card mac 52:54:00:11:22:33 does not match
//                     source 52:54:00:0c:f8:1a
// and `virsh save-image-define` the same (it runs the same check). Disk, serial and socket paths may
// change; name, UUID and MAC may not.
//
// So each clone gets its own save image: libvirt's header (src/qemu/qemu_saveimage.h, version 2:
// magic "LibvirtQemudSave", then little-endian u32 version, data_len, was_running, compressed (format),
// cookieOffset, 14 unused u32 = 92 bytes), data_len bytes holding the domain XML (NUL-terminated), the
// save cookie (NUL-terminated, at cookieOffset) and zero padding, then QEMU's migration stream ("QEVM",
// version 3, ..., QEMU_VM_EOF, the JSON device description) — with the clone's XML (its name, UUID, MAC,
// disk, serial log, control socket, UDP ports) and the stream unchanged. libvirt starts QEMU with the
// clone's XML and hands it the same fd, positioned after the header, as its incoming migration.
//
// The per-clone image is not written to disk: libvirtd reads the header and QEMU the stream sequentially
// from one fd, and libvirt 9.0 accepts a FIFO as the restore path. Per clone we make a FIFO and a small
// writer process (`cat` of the new header from stdin, then `tail -c +OFFSET` of the shared image), so
// making the clone's image costs the header (~70 KB) instead of a copy of the stream (~60 MB for a
// 256 MiB minimal guest; 0.1-0.3 s from the page cache, more when the cache is cold, and as much disk
// per clone). 'copy' mode (a real file: header + stream copied) is kept as a fallback and for
// comparison (bench/scaling-libvirt.ts measures both).
//
// The NIC's MAC comes back from the snapshot in the guest (the e1000's registers are device state in the
// stream): the identity fix-up (warm-identity.ts fixupScript) sets the clone's own MAC inside the guest.

import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, createReadStream, createWriteStream, fstatSync, openSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { BadInputError, ToolError } from '../common/errors.ts';
import { abortableSleep as sleep } from '../common/sleep.ts';
import { tool } from './host-tool.ts';

export const SAVE_MAGIC = 'LibvirtQemudSave';
/** what libvirt writes first; replaced by SAVE_MAGIC once the save has completed */
export const SAVE_PARTIAL = 'LibvirtQemudPart';
export const SAVE_VERSION = 2;
/** sizeof(virQEMUSaveHeader): 16 magic bytes + 19 u32 */
export const SAVE_HEADER_BYTES = 92;
const FORMATS = ['raw', 'gzip', 'bzip2', 'xz', 'lzop'];

/** A file that is not a complete, uncompressed libvirt QEMU save image (names the file and what is wrong). */
export class SaveImageError extends BadInputError {}

/** A parsed libvirt QEMU save image (header and XML; the stream stays in the file). */
export interface SaveImage {
  file: string;
  size: number;
  version: number;
  dataLen: number;
  wasRunning: boolean;
  /** the domain XML libvirt saved (the live, migratable definition) */
  xml: string;
  /** libvirt's save cookie (CPU definition, ...), null when there is none */
  cookie: string | null;
  /** where QEMU's migration stream starts (92 + dataLen) */
  streamOffset: number;
}

/**
 * Read and check a save image strictly: magic (a partial save is named as such), version 2 in
 * little-endian, uncompressed, data_len and cookieOffset inside the file, NUL-terminated XML that is a
 * <domain>, reserved words zero, a QEMU stream that starts with "QEVM" version 3 and ends with QEMU's
 * device description (QEMU_VM_EOF, QEMU_VM_VMDESCRIPTION, length, JSON): a truncated file is refused.
 */
export function readSaveImage(file: string): SaveImage {
  const bad = (what: string): never => {
    throw new SaveImageError(file, `not a usable libvirt QEMU save image: ${what}`);
  };
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    throw new SaveImageError(file, `cannot open save image: ${(err as Error).message}`);
  }
  try {
    const size = fstatSync(fd).size;
    const read = (pos: number, len: number): Buffer => {
      const b = Buffer.alloc(len);
      const n = readSync(fd, b, 0, len, pos);
      return n === len ? b : bad(`file ends at byte ${size}, inside ${len} bytes wanted at ${pos}`);
    };
    if (size < SAVE_HEADER_BYTES) bad(`${size} bytes, shorter than the ${SAVE_HEADER_BYTES}-byte header`);
    const h = read(0, SAVE_HEADER_BYTES);
    const magic = h.subarray(0, 16).toString('latin1');
    if (magic === SAVE_PARTIAL) bad(`magic ${SAVE_PARTIAL}: libvirt never completed this save`);
    if (magic !== SAVE_MAGIC) bad(`magic ${JSON.stringify(magic)} is not ${SAVE_MAGIC}`);
    const version = h.readUInt32LE(16);
    if (version === 0x02000000) bad('version field is big-endian (saved on another architecture)');
    if (version !== SAVE_VERSION) bad(`header version ${version}, expected ${SAVE_VERSION} (libvirt 9.0)`);
    const dataLen = h.readUInt32LE(20);
    const wasRunning = h.readUInt32LE(24);
    const format = h.readUInt32LE(28);
    const cookieOffset = h.readUInt32LE(32);
    if (wasRunning > 1) bad(`was_running ${wasRunning} is not 0 or 1`);
    if (format !== 0) bad(`compressed (${FORMATS[format] ?? `format ${format}`}); only raw images are supported (qemu.conf save_image_format = "raw")`);
    for (let i = 36; i < SAVE_HEADER_BYTES; i += 4) if (h.readUInt32LE(i) !== 0) bad(`reserved header word at byte ${i} is not zero`);
    if (dataLen === 0 || SAVE_HEADER_BYTES + dataLen > size) bad(`data_len ${dataLen} does not fit a ${size}-byte file`);
    if (cookieOffset >= dataLen) bad(`cookieOffset ${cookieOffset} is not inside data_len ${dataLen}`);
    const data = read(SAVE_HEADER_BYTES, dataLen);
    const xmlEnd = data.indexOf(0);
    if (xmlEnd < 0 || (cookieOffset !== 0 && xmlEnd >= cookieOffset)) bad('the domain XML is not NUL-terminated inside its area');
    const xml = data.subarray(0, xmlEnd).toString('utf8');
    if (!/^<domain[\s>]/.test(xml) || !/<\/domain>\s*$/.test(xml)) bad('the XML area does not hold a <domain> element');
    let cookie: string | null = null;
    if (cookieOffset !== 0) {
      const end = data.indexOf(0, cookieOffset);
      if (end < 0) bad('the save cookie is not NUL-terminated');
      cookie = data.subarray(cookieOffset, end).toString('utf8');
    }
    const streamOffset = SAVE_HEADER_BYTES + dataLen;
    if (size - streamOffset < 8) bad(`no QEMU migration stream after the header (file ends at ${size})`);
    const sh = read(streamOffset, 8);
    if (sh.toString('latin1', 0, 4) !== 'QEVM' || sh.readUInt32BE(4) !== 3) bad(`no QEMU migration stream ("QEVM", version 3) at byte ${streamOffset}`);
    // the stream's end: 0x00 (QEMU_VM_EOF), 0x06 (QEMU_VM_VMDESCRIPTION), be32 length, that much JSON
    const tailLen = Math.min(size - streamOffset, 4 << 20);
    const tail = read(size - tailLen, tailLen);
    let complete = false;
    if (tail[tail.length - 1] === 0x7d /* } */) {
      for (let i = tail.length - 7; i >= 0; i--) {
        if (tail[i] === 0x00 && tail[i + 1] === 0x06 && tail.readUInt32BE(i + 2) === tail.length - (i + 6) && tail[i + 6] === 0x7b /* { */) {
          complete = true;
          break;
        }
      }
    }
    if (!complete) bad(`the QEMU migration stream does not end with its device description: truncated (${size} bytes)`);
    return { file, size, version, dataLen, wasRunning: wasRunning === 1, xml, cookie, streamOffset };
  } finally {
    closeSync(fd);
  }
}

/**
 * The front of a clone's save image: `img`'s header with `xml` as the domain XML and the same cookie,
 * padded by 64 KiB as libvirt pads it (room for `virsh save-image-edit`). QEMU's stream follows it.
 */
export function cloneImageHeader(img: SaveImage, xml: string): Buffer {
  const x = Buffer.from(`${xml}\0`, 'utf8');
  const c = img.cookie === null ? Buffer.alloc(0) : Buffer.from(`${img.cookie}\0`, 'utf8');
  const dataLen = x.length + c.length + 64 * 1024;
  const h = Buffer.alloc(SAVE_HEADER_BYTES + dataLen);
  h.write(SAVE_MAGIC, 0, 'latin1');
  h.writeUInt32LE(SAVE_VERSION, 16);
  h.writeUInt32LE(dataLen, 20);
  h.writeUInt32LE(img.wasRunning ? 1 : 0, 24);
  h.writeUInt32LE(0, 28); // raw
  h.writeUInt32LE(img.cookie === null ? 0 : x.length, 32);
  x.copy(h, SAVE_HEADER_BYTES);
  c.copy(h, SAVE_HEADER_BYTES + x.length);
  return h;
}

/** 'copy' mode: write a whole clone image to `out` (the new header, then the stream copied). */
export async function writeCloneImage(img: SaveImage, xml: string, out: string): Promise<void> {
  writeFileSync(out, cloneImageHeader(img, xml), { mode: 0o600 });
  await pipeline(createReadStream(img.file, { start: img.streamOffset }), createWriteStream(out, { flags: 'a' }));
}

/**
 * 'pipe' mode: a FIFO at `fifo` and a writer process that feeds it the new header, then the stream
 * straight from the shared image (`tail -c +N` seeks; nothing is copied to disk). The writer's open of
 * the FIFO blocks until libvirtd opens it for reading; kill() ends it if the restore never does.
 */
export async function pipeCloneImage(img: SaveImage, xml: string, fifo: string): Promise<{ writer: ChildProcess; exited: Promise<{ code: number | null; stderr: string }>; kill(): void }> {
  const header = cloneImageHeader(img, xml);
  rmSync(fifo, { force: true });
  await tool('mkfifo', ['-m', '600', fifo]);
  const writer = spawn('sh', ['-c', 'exec >"$1" || exit 1; cat && exec tail -c "+$2" -- "$3"', 'ciel-save-pipe', fifo, String(img.streamOffset + 1), img.file], {
    stdio: ['pipe', 'ignore', 'pipe'],
  });
  let stderr = '';
  writer.stderr!.setEncoding('utf8');
  writer.stderr!.on('data', (d: string) => (stderr = (stderr + d).slice(-2000)));
  writer.stdin!.on('error', () => {}); // EPIPE when the reader went away early: the restore reports it
  writer.stdin!.end(header);
  const exited = new Promise<{ code: number | null; stderr: string }>((res) => {
    writer.once('error', (e) => res({ code: null, stderr: e.message }));
    writer.once('exit', (code) => res({ code, stderr }));
  });
  return {
    writer,
    exited,
    kill: () => {
      if (writer.exitCode === null && writer.signalCode === null) writer.kill('SIGKILL');
    },
  };
}

/**
 * Restore a clone from `img` under `xml` (its own name, UUID, MAC, paths): make its image at `path`
 * (a FIFO, or a file in 'copy' mode), `virsh restore --running` it, remove it. The domain should be
 * defined with the same XML first (it then stays persistent). Returns the time making the clone's
 * image took and the restore's (virsh restore returns once the guest runs again).
 */
export async function restoreFromImage(o: {
  virsh: (...args: string[]) => Promise<string>;
  img: SaveImage;
  xml: string;
  path: string;
  mode: 'pipe' | 'copy';
}): Promise<{ image_ms: number; restore_ms: number }> {
  const t0 = performance.now();
  let pipe: Awaited<ReturnType<typeof pipeCloneImage>> | undefined;
  try {
    if (o.mode === 'pipe') pipe = await pipeCloneImage(o.img, o.xml, o.path);
    else await writeCloneImage(o.img, o.xml, o.path);
    const image_ms = performance.now() - t0;
    const t1 = performance.now();
    try {
      await o.virsh('restore', '--running', o.path);
    } catch (err) {
      pipe?.kill();
      const w = pipe ? await pipe.exited : undefined;
      throw new ToolError('virsh', `restore of ${o.img.file} as a clone failed: ${(err as Error).message}${w?.stderr ? `; image writer: ${w.stderr.trim()}` : ''}`);
    }
    const restore_ms = performance.now() - t1;
    if (pipe) {
      // QEMU has read the whole stream by now; the writer ends with it
      await Promise.race([pipe.exited, sleep(2000)]);
    }
    return { image_ms, restore_ms };
  } finally {
    pipe?.kill();
    rmSync(o.path, { force: true });
  }
}
