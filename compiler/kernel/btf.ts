// BTF (BPF Type Format) of the guest kernel, read from the `.BTF` ELF section of its vmlinux
// (vmlinux.ts gets that out of the bzImage once and caches it). The BTF parser is our own, following the format in the kernel's
// Documentation/bpf/btf.rst: a header, a type section (btf_type records, each followed by
// kind-specific data) and a string section. Type ids start at 1; id 0 is void.

import { closeSync, openSync, readSync } from 'node:fs';
import { BadInputError, CielError } from '../../common/errors.ts';
import { vmlinuxFor, type BtfSourceTree } from './vmlinux.ts';
export { bzImagePayload, extractVmlinux, vmlinuxFor, type BtfSourceTree } from './vmlinux.ts';

export const BTF_KINDS = [
  'UNKN',
  'INT',
  'PTR',
  'ARRAY',
  'STRUCT',
  'UNION',
  'ENUM',
  'FWD',
  'TYPEDEF',
  'VOLATILE',
  'CONST',
  'RESTRICT',
  'FUNC',
  'FUNC_PROTO',
  'VAR',
  'DATASEC',
  'FLOAT',
  'DECL_TAG',
  'TYPE_TAG',
  'ENUM64',
] as const;
export type BtfKind = (typeof BTF_KINDS)[number];

export interface BtfMember {
  name: string;
  type: number;
  /** offset from the start of the struct, in bits */
  bitOffset: number;
  /** bitfield width in bits; 0 = not a bitfield */
  bitfieldSize: number;
}

export interface BtfType {
  id: number;
  kind: BtfKind;
  /** empty for anonymous types */
  name: string;
  kindFlag: boolean;
  vlen: number;
  /** byte size: INT, STRUCT, UNION, ENUM, ENUM64, DATASEC, FLOAT */
  size?: number;
  /** referenced type: PTR, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO (return), VAR, DECL_TAG, TYPE_TAG */
  type?: number;
  int?: { encoding: number; bitOffset: number; bits: number; signed: boolean; char: boolean; bool: boolean };
  array?: { type: number; indexType: number; nelems: number };
  members?: BtfMember[];
  enumValues?: { name: string; value: bigint }[];
  params?: { name: string; type: number }[];
  /** VAR: 0 static, 1 global; FUNC: vlen holds linkage */
  linkage?: number;
  vars?: { type: number; offset: number; size: number }[];
  /** DECL_TAG: -1 for the whole declaration, else the member/parameter index */
  componentIdx?: number;
}

/** A struct/field lookup that the kernel's BTF cannot answer. */
export class BtfLookupError extends CielError {
  constructor(
    readonly structName: string,
    readonly fieldPath: string | undefined,
    detail: string,
  ) {
    super(detail);
  }
}

const REF_KINDS = new Set<BtfKind>(['TYPEDEF', 'VOLATILE', 'CONST', 'RESTRICT', 'TYPE_TAG']);

export interface MemberInfo {
  /** byte offset from the start of the outer struct (bitfields: the byte holding the first bit) */
  offset: number;
  bitOffset: number;
  bitfieldSize: number;
  /** the member's type id (unresolved: may be a typedef) */
  type: number;
  /** byte size of the member's type (for bitfields, of the underlying integer) */
  size: number;
}

/** A BTF string section (for split BTF: offsets below the base's length are the base's strings). */
export interface BtfStrings {
  /** total string offset space (base + own) */
  length: number;
  get(off: number): string;
}

export class Btf {
  readonly types: BtfType[]; // index = id; [0] is void. Split BTF: the base's types come first.
  private byName?: Map<string, number[]>;

  constructor(
    types: BtfType[],
    readonly source = 'BTF',
    readonly strings: BtfStrings = { length: 0, get: () => '' },
    /** for split (module) BTF: the vmlinux BTF it extends */
    readonly base?: Btf,
  ) {
    this.types = types;
  }

  get count(): number {
    return this.types.length - 1;
  }

  type(id: number): BtfType {
    const t = this.types[id];
    if (!t) throw new BadInputError(this.source, `BTF type id ${id} out of range (1..${this.count})`);
    return t;
  }

  private index(): Map<string, number[]> {
    if (!this.byName) {
      const m = new Map<string, number[]>();
      for (let i = 1; i < this.types.length; i++) {
        const t = this.types[i]!;
        if (!t.name) continue;
        const list = m.get(t.name);
        if (list) list.push(i);
        else m.set(t.name, [i]);
      }
      this.byName = m;
    }
    return this.byName;
  }

  /** All type ids with that name (any kind). */
  idsByName(name: string): number[] {
    return this.index().get(name) ?? [];
  }

  /** Skip typedefs, const/volatile/restrict and type tags. */
  resolve(id: number): BtfType {
    let t = this.type(id);
    for (let guard = 0; REF_KINDS.has(t.kind); guard++) {
      if (guard > 64) throw new BadInputError(this.source, `typedef loop at type ${id}`);
      t = t.type ? this.type(t.type) : voidType;
    }
    return t;
  }

  /** Byte size of a type (pointers are 8 bytes: x86-64). */
  sizeOf(id: number): number {
    const t = this.resolve(id);
    switch (t.kind) {
      case 'INT':
      case 'STRUCT':
      case 'UNION':
      case 'ENUM':
      case 'ENUM64':
      case 'FLOAT':
      case 'DATASEC':
        return t.size!;
      case 'PTR':
        return 8;
      case 'ARRAY':
        return t.array!.nelems * this.sizeOf(t.array!.type);
      default:
        throw new BadInputError(this.source, `type ${t.id} (${t.kind} ${t.name || '<anon>'}) has no size`);
    }
  }

  /** C-like name of a type, for messages. */
  typeName(id: number): string {
    if (id === 0) return 'void';
    const t = this.type(id);
    switch (t.kind) {
      case 'STRUCT':
        return `struct ${t.name || '<anon>'}`;
      case 'UNION':
        return `union ${t.name || '<anon>'}`;
      case 'ENUM':
      case 'ENUM64':
        return `enum ${t.name || '<anon>'}`;
      case 'PTR':
        return `${this.typeName(t.type ?? 0)} *`;
      case 'CONST':
        return `const ${this.typeName(t.type ?? 0)}`;
      case 'VOLATILE':
        return `volatile ${this.typeName(t.type ?? 0)}`;
      case 'ARRAY':
        return `${this.typeName(t.array!.type)}[${t.array!.nelems}]`;
      case 'FWD':
        return `${t.kindFlag ? 'union' : 'struct'} ${t.name} (declared only)`;
      default:
        return t.name || `<${t.kind.toLowerCase()}>`;
    }
  }

  /**
   * The struct (or union) of that name: `cgroup`, `struct cgroup` or `union foo`; a typedef name
   * that resolves to a struct works too. Prefers a complete definition over a forward declaration.
   */
  findStruct(name: string): BtfType {
    const m = /^(struct|union)\s+(.+)$/.exec(name.trim());
    const want = m ? (m[1] === 'union' ? ['UNION'] : ['STRUCT']) : ['STRUCT', 'UNION'];
    const bare = (m ? m[2]! : name).trim();
    const ids = this.idsByName(bare);
    for (const id of ids) {
      const t = this.types[id]!;
      if (want.includes(t.kind)) return t;
    }
    for (const id of ids) {
      const t = this.types[id]!;
      if (t.kind === 'TYPEDEF') {
        const r = this.resolve(id);
        if (r.kind === 'STRUCT' || r.kind === 'UNION') return r;
      }
    }
    const fwd = ids.some((id) => this.types[id]!.kind === 'FWD');
    throw new BtfLookupError(
      bare,
      undefined,
      `${this.source}: no ${m ? m[1] : 'struct'} '${bare}' in the kernel's BTF` +
        (fwd ? ' (only a forward declaration: the type is defined in a module, not in vmlinux)' : ''),
    );
  }

  structSize(name: string): number {
    return this.findStruct(name).size!;
  }

  /**
   * Find `name` among the members of struct/union `t`, looking into anonymous struct/union
   * members (in declaration order). Returns the member with its bit offset relative to `t`.
   */
  private findMember(t: BtfType, name: string): BtfMember | undefined {
    for (const mem of t.members ?? []) {
      if (mem.name === name) return mem;
    }
    for (const mem of t.members ?? []) {
      if (mem.name) continue;
      const inner = this.resolve(mem.type);
      if (inner.kind !== 'STRUCT' && inner.kind !== 'UNION') continue;
      const hit = this.findMember(inner, name);
      if (hit) return { ...hit, bitOffset: mem.bitOffset + hit.bitOffset };
    }
    return undefined;
  }

  /** Member at a dotted path (`self.refcnt`, `rstat_cpu`, `bstat.cputime.sum_exec_runtime`, `arr[3].x`). */
  member(structName: string, path: string): MemberInfo {
    const root = this.findStruct(structName);
    const rootName = `${root.kind === 'UNION' ? 'union' : 'struct'} ${root.name}`;
    const tokens = path.match(/[A-Za-z_][A-Za-z0-9_]*|\[\s*\d+\s*\]|\./g);
    if (!tokens || tokens.join('').replace(/\s/g, '') !== path.replace(/\s/g, '')) {
      throw new BtfLookupError(root.name, path, `${rootName}: bad field path '${path}' (expected a.b.c or a[2].b)`);
    }
    let cur: BtfType = root;
    let curName = rootName;
    let bitOffset = 0;
    let bitfieldSize = 0;
    let typeId = root.id;
    for (const tok of tokens) {
      if (tok === '.') continue;
      if (bitfieldSize) {
        throw new BtfLookupError(root.name, path, `${rootName}: '${path}' goes past the bitfield before '${tok}'`);
      }
      if (tok.startsWith('[')) {
        const idx = Number(tok.slice(1, -1));
        if (cur.kind !== 'ARRAY') {
          throw new BtfLookupError(root.name, path, `${rootName}: '${path}': ${curName} is not an array`);
        }
        const elem = cur.array!.type;
        bitOffset += idx * this.sizeOf(elem) * 8;
        typeId = elem;
        cur = this.resolve(elem);
        curName = this.typeName(elem);
        continue;
      }
      if (cur.kind !== 'STRUCT' && cur.kind !== 'UNION') {
        const why = cur.kind === 'PTR' ? ' (a pointer: offsetof cannot follow it)' : '';
        throw new BtfLookupError(root.name, path, `${rootName}: '${path}': ${curName} is not a struct or union${why}, so it has no member '${tok}'`);
      }
      const mem = this.findMember(cur, tok);
      if (!mem) {
        const names = (cur.members ?? []).map((m) => m.name || '<anon>').join(', ');
        throw new BtfLookupError(
          root.name,
          path,
          `${rootName} has no member '${tok}'` +
            (cur === root ? '' : ` in ${curName}`) +
            ` (field path '${path}'); members: ${names}`,
        );
      }
      bitOffset += mem.bitOffset;
      bitfieldSize = mem.bitfieldSize;
      typeId = mem.type;
      cur = this.resolve(mem.type);
      curName = this.typeName(mem.type);
    }
    return { offset: Math.floor(bitOffset / 8), bitOffset, bitfieldSize, type: typeId, size: this.sizeOf(typeId) };
  }

  /** offsetof(struct structName, path) in bytes. Throws BtfLookupError naming struct and field. */
  memberOffset(structName: string, path: string): number {
    const m = this.member(structName, path);
    if (m.bitfieldSize || m.bitOffset % 8 !== 0) {
      throw new BtfLookupError(structName, path, `struct ${structName}: '${path}' is a bitfield (bit offset ${m.bitOffset}); offsetof does not apply`);
    }
    return m.offset;
  }
}

const voidType: BtfType = { id: 0, kind: 'UNKN', name: 'void', kindFlag: false, vlen: 0 };

/**
 * Parse a raw .BTF section. With `base`, the data is split BTF (a module's .BTF): its type ids
 * continue after the base's and string offsets continue after the base's string section.
 */
export function parseBtf(buf: Buffer, source = 'BTF', base?: Btf): Btf {
  if (buf.length < 24) throw new BadInputError(source, 'BTF too short');
  let le: boolean;
  if (buf.readUInt16LE(0) === 0xeb9f) le = true;
  else if (buf.readUInt16BE(0) === 0xeb9f) le = false;
  else throw new BadInputError(source, `bad BTF magic 0x${buf.readUInt16LE(0).toString(16)}`);
  const u32 = le ? (o: number) => buf.readUInt32LE(o) : (o: number) => buf.readUInt32BE(o);
  const i32 = le ? (o: number) => buf.readInt32LE(o) : (o: number) => buf.readInt32BE(o);
  const version = buf[2]!;
  if (version !== 1) throw new BadInputError(source, `unsupported BTF version ${version}`);
  const hdrLen = u32(4);
  const typeOff = hdrLen + u32(8);
  const typeLen = u32(12);
  const strOff = hdrLen + u32(16);
  const strLen = u32(20);
  if (typeOff + typeLen > buf.length || strOff + strLen > buf.length) {
    throw new BadInputError(source, 'BTF sections run past the end of the data');
  }
  const strCache = new Map<number, string>();
  const baseLen = base ? base.strings.length : 0;
  const str = (offIn: number): string => {
    if (offIn === 0) return '';
    if (offIn < baseLen) return base!.strings.get(offIn);
    const off = offIn - baseLen;
    let s = strCache.get(off);
    if (s === undefined) {
      if (off >= strLen) throw new BadInputError(source, `BTF string offset ${offIn} out of range`);
      const start = strOff + off;
      const end = buf.indexOf(0, start);
      s = buf.toString('utf8', start, end < 0 || end > strOff + strLen ? strOff + strLen : end);
      strCache.set(off, s);
    }
    return s;
  };

  const types: BtfType[] = base ? base.types.slice() : [voidType];
  let p = typeOff;
  const end = typeOff + typeLen;
  while (p < end) {
    if (p + 12 > end) throw new BadInputError(source, `truncated BTF type record at byte ${p - typeOff}`);
    const nameOff = u32(p);
    const info = u32(p + 4);
    const sizeOrType = u32(p + 8);
    p += 12;
    const kindNum = (info >>> 24) & 0x1f;
    const vlen = info & 0xffff;
    const kindFlag = (info >>> 31) === 1;
    const kind = BTF_KINDS[kindNum];
    if (!kind || kind === 'UNKN') {
      throw new BadInputError(source, `unknown BTF kind ${kindNum} at type id ${types.length}`);
    }
    const t: BtfType = { id: types.length, kind, name: str(nameOff), kindFlag, vlen };
    switch (kind) {
      case 'INT': {
        const v = u32(p);
        p += 4;
        const encoding = (v >>> 24) & 0x0f;
        t.size = sizeOrType;
        t.int = { encoding, bitOffset: (v >>> 16) & 0xff, bits: v & 0xff, signed: (encoding & 1) !== 0, char: (encoding & 2) !== 0, bool: (encoding & 4) !== 0 };
        break;
      }
      case 'PTR':
      case 'FWD':
      case 'TYPEDEF':
      case 'VOLATILE':
      case 'CONST':
      case 'RESTRICT':
      case 'TYPE_TAG':
        t.type = sizeOrType;
        break;
      case 'FUNC':
        t.type = sizeOrType;
        t.linkage = vlen;
        break;
      case 'FLOAT':
        t.size = sizeOrType;
        break;
      case 'ARRAY':
        t.array = { type: u32(p), indexType: u32(p + 4), nelems: u32(p + 8) };
        p += 12;
        break;
      case 'STRUCT':
      case 'UNION': {
        t.size = sizeOrType;
        const members: BtfMember[] = new Array(vlen);
        for (let i = 0; i < vlen; i++) {
          const off = u32(p + 8);
          members[i] = {
            name: str(u32(p)),
            type: u32(p + 4),
            bitOffset: kindFlag ? off & 0xffffff : off,
            bitfieldSize: kindFlag ? off >>> 24 : 0,
          };
          p += 12;
        }
        t.members = members;
        break;
      }
      case 'ENUM': {
        t.size = sizeOrType;
        const vals = new Array<{ name: string; value: bigint }>(vlen);
        for (let i = 0; i < vlen; i++) {
          // kind_flag: 1 = signed values, 0 = unsigned (btf.rst)
          const raw = kindFlag ? i32(p + 4) : u32(p + 4);
          vals[i] = { name: str(u32(p)), value: BigInt(raw) };
          p += 8;
        }
        t.enumValues = vals;
        break;
      }
      case 'ENUM64': {
        t.size = sizeOrType;
        const vals = new Array<{ name: string; value: bigint }>(vlen);
        for (let i = 0; i < vlen; i++) {
          const lo = BigInt(u32(p + 4));
          const hi = BigInt(u32(p + 8));
          let v = (hi << 32n) | lo;
          if (kindFlag) v = BigInt.asIntN(64, v);
          vals[i] = { name: str(u32(p)), value: v };
          p += 12;
        }
        t.enumValues = vals;
        break;
      }
      case 'FUNC_PROTO': {
        t.type = sizeOrType;
        const params = new Array<{ name: string; type: number }>(vlen);
        for (let i = 0; i < vlen; i++) {
          params[i] = { name: str(u32(p)), type: u32(p + 4) };
          p += 8;
        }
        t.params = params;
        break;
      }
      case 'VAR':
        t.type = sizeOrType;
        t.linkage = u32(p);
        p += 4;
        break;
      case 'DATASEC': {
        t.size = sizeOrType;
        const vars = new Array<{ type: number; offset: number; size: number }>(vlen);
        for (let i = 0; i < vlen; i++) {
          vars[i] = { type: u32(p), offset: u32(p + 4), size: u32(p + 8) };
          p += 12;
        }
        t.vars = vars;
        break;
      }
      case 'DECL_TAG':
        t.type = sizeOrType;
        t.componentIdx = i32(p);
        p += 4;
        break;
    }
    types.push(t);
  }
  if (p !== end) throw new BadInputError(source, 'BTF type section ends inside a record');
  return new Btf(types, source, { length: baseLen + strLen, get: str }, base);
}

// ---------------------------------------------------------------------------------------------
// ELF sections

/** Raw bytes of a named section of an ELF64 little-endian file (read with positioned reads). */
export function readElfSection(file: string, section: string): Buffer {
  const fd = openSync(file, 'r');
  try {
    const eh = Buffer.alloc(64);
    readSync(fd, eh, 0, 64, 0);
    if (eh.readUInt32BE(0) !== 0x7f454c46) throw new BadInputError(file, 'not an ELF file');
    if (eh[4] !== 2 || eh[5] !== 1) throw new BadInputError(file, 'not a 64-bit little-endian ELF');
    const shoff = Number(eh.readBigUInt64LE(0x28));
    const shentsize = eh.readUInt16LE(0x3a);
    const shnum = eh.readUInt16LE(0x3c);
    const shstrndx = eh.readUInt16LE(0x3e);
    const sh = Buffer.alloc(shentsize * shnum);
    readSync(fd, sh, 0, sh.length, shoff);
    const sec = (i: number) => ({
      name: sh.readUInt32LE(i * shentsize),
      offset: Number(sh.readBigUInt64LE(i * shentsize + 0x18)),
      size: Number(sh.readBigUInt64LE(i * shentsize + 0x20)),
    });
    const strtab = sec(shstrndx);
    const names = Buffer.alloc(strtab.size);
    readSync(fd, names, 0, strtab.size, strtab.offset);
    for (let i = 0; i < shnum; i++) {
      const s = sec(i);
      const end = names.indexOf(0, s.name);
      if (names.toString('latin1', s.name, end) === section) {
        const data = Buffer.alloc(s.size);
        readSync(fd, data, 0, s.size, s.offset);
        return data;
      }
    }
    throw new BadInputError(file, `no ${section} section (kernel built without CONFIG_DEBUG_INFO_BTF?)`);
  } finally {
    closeSync(fd);
  }
}

const loaded = new Map<string, Btf>();

/**
 * The split BTF of a kernel module (`.ko`, uncompressed as Debian 12 ships them) on top of the
 * kernel's BTF: types private to the module (e.g. `struct veth_priv` in veth.ko) resolve here.
 */
export function loadModuleBtf(ko: string, base: Btf): Btf {
  if (/\.(xz|zst|gz)$/.test(ko)) throw new BadInputError(ko, 'compressed module: decompress it first');
  return parseBtf(readElfSection(ko, '.BTF'), `${ko}(.BTF)`, base);
}

/** Load (and memoise per process) the BTF of a kernel tree. */
export async function loadBtf(tree: BtfSourceTree): Promise<Btf> {
  const vmlinux = await vmlinuxFor(tree);
  const hit = loaded.get(vmlinux);
  if (hit) return hit;
  const btf = parseBtf(readElfSection(vmlinux, '.BTF'), `${vmlinux}(.BTF)`);
  loaded.set(vmlinux, btf);
  return btf;
}
