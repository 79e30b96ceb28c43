// Read-only file mappings through libc (koffi), for backends whose guest RAM is a file:
// a QEMU memory-backend-file, a raw dump, an ELF core. PROT_READ only: nothing here can write the guest.
import koffi from 'koffi';
import { statSync } from 'node:fs';
import { BadInputError } from '../../common/errors.ts';

const libc = koffi.load('libc.so.6');
const c_open = libc.func('int open(const char *path, int flags)');
const c_close = libc.func('int close(int fd)');
const c_mmap = libc.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)');
const c_munmap = libc.func('int munmap(void *addr, size_t len)');
const c_strerror = libc.func('const char *strerror(int errnum)');
const lastError = () => c_strerror(koffi.errno()) as string;

const O_RDONLY = 0;
const O_CLOEXEC = 0o2000000;
const PROT_READ = 1;
const MAP_SHARED = 1;
const MAP_FAILED = 0xffffffffffffffffn;

export interface FileMapping {
  path: string;
  host: bigint;
  length: number;
  unmap(): void;
}

/** Map [offset, offset+length) of `path` read-only and shared (a live guest's writes show through). */
export function mapFileReadOnly(path: string, offset = 0, length?: number): FileMapping {
  let size: number;
  try {
    size = statSync(path).size;
  } catch (e) {
    throw new BadInputError(path, `cannot open memory file: ${(e as Error).message}`);
  }
  const len = length ?? size - offset;
  if (offset % 4096 !== 0) throw new BadInputError(path, `mapping offset ${offset} is not page aligned`);
  // Mapping past the end of the file would SIGBUS on access: refuse up front.
  if (len <= 0 || offset + len > size) throw new BadInputError(path, `file is ${size} bytes, cannot map ${len} bytes at offset ${offset}`);
  const fd = c_open(path, O_RDONLY | O_CLOEXEC) as number;
  if (fd < 0) throw new BadInputError(path, `open failed: ${lastError()}`);
  const host = c_mmap(null, len, PROT_READ, MAP_SHARED, fd, offset) as bigint | null;
  const why = host === null || host === MAP_FAILED ? lastError() : '';
  c_close(fd);
  if (why) throw new BadInputError(path, `mmap of ${len} bytes failed: ${why}`);
  let mapped = true;
  return {
    path,
    host: host as bigint,
    length: len,
    unmap() {
      if (mapped) c_munmap(host, len);
      mapped = false;
    },
  };
}
