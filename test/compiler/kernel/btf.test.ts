import { beforeAll, describe, expect, it } from 'vitest';
import { existsSync, statSync } from 'node:fs';
import { Btf, BtfLookupError, bzImagePayload, loadBtf, loadModuleBtf, parseBtf, readElfSection, vmlinuxFor } from '../../../compiler/kernel/btf.ts';
import { fetchKernel, type KernelTree } from '../../../compiler/kernel/packages.ts';

// ---- a tiny BTF writer, to test every kind the parser knows -------------------------------

class BtfWriter {
  private strs: string[] = [''];
  private strOff = new Map<string, number>([['', 0]]);
  private strLen = 1;
  private recs: Buffer[] = [];
  s(x: string): number {
    let o = this.strOff.get(x);
    if (o === undefined) {
      o = this.strLen;
      this.strOff.set(x, o);
      this.strs.push(x);
      this.strLen += Buffer.byteLength(x) + 1;
    }
    return o;
  }
  /** adds a type; returns its id */
  t(kind: number, name: string, vlen: number, sizeOrType: number, extra: number[] = [], kflag = false): number {
    const b = Buffer.alloc(12 + extra.length * 4);
    b.writeUInt32LE(this.s(name), 0);
    b.writeUInt32LE((((kflag ? 1 : 0) << 31) | (kind << 24) | vlen) >>> 0, 4);
    b.writeUInt32LE(sizeOrType >>> 0, 8);
    extra.forEach((v, i) => b.writeUInt32LE(v >>> 0, 12 + i * 4));
    this.recs.push(b);
    return this.recs.length;
  }
  build(): Buffer {
    const types = Buffer.concat(this.recs);
    const strings = Buffer.concat(this.strs.map((x) => Buffer.from(`${x}\0`)));
    const h = Buffer.alloc(24);
    h.writeUInt16LE(0xeb9f, 0);
    h[2] = 1;
    h.writeUInt32LE(24, 4);
    h.writeUInt32LE(0, 8);
    h.writeUInt32LE(types.length, 12);
    h.writeUInt32LE(types.length, 16);
    h.writeUInt32LE(strings.length, 20);
    return Buffer.concat([h, types, strings]);
  }
}

function synthetic(): Btf {
  const w = new BtfWriter();
  const int = w.t(1, 'int', 0, 4, [(1 << 24) | 32]); // 1: signed 32-bit
  const uint = w.t(1, 'unsigned int', 0, 4, [32]); // 2
  const ptr = w.t(2, '', 0, int); // 3: int *
  const arr = w.t(3, '', 0, 0, [int, uint, 4]); // 4: int[4]
  const inner = w.t(4, 'inner', 2, 8, [w.s('x'), int, 0, w.s('y'), int, 32]); // 5
  const tdInner = w.t(8, 'inner_t', 0, inner); // 6
  const cInner = w.t(10, '', 0, tdInner); // 7: const inner_t
  // 8: anonymous union { int u1; struct { int a1; int a2; }; } -- the struct is 9
  const anonU = w.t(5, '', 2, 8, [w.s('u1'), int, 0, 0, 9, 0]);
  w.t(4, '', 2, 8, [w.s('a1'), int, 0, w.s('a2'), int, 32]); // 9
  // 10: struct outer with a kflag bitfield (3 bits at bit 72) and the rest
  const outer = w.t(
    4,
    'outer',
    6,
    64,
    [
      w.s('p'), ptr, 0,
      w.s('bits'), uint, (3 << 24) | 72,
      w.s('in'), cInner, 128,
      0, anonU, 192,
      w.s('arr'), arr, 256,
      w.s('ins'), 13, 384,
    ],
    true,
  );
  const vol = w.t(9, '', 0, uint); // 11
  w.t(11, '', 0, ptr); // 12 restrict
  w.t(3, '', 0, 0, [inner, uint, 2]); // 13: inner[2]
  w.t(6, 'color', 2, 4, [w.s('RED'), 0, w.s('NEG'), -1 >>> 0], true); // 14 signed enum
  w.t(6, 'ucolor', 1, 4, [w.s('BIG'), 0xffffffff]); // 15 unsigned enum
  w.t(19, 'e64', 1, 8, [w.s('HUGE'), 0x1, 0x80000000]); // 16 enum64, unsigned
  w.t(7, 'later', 0, 0); // 17 fwd struct
  const proto = w.t(13, '', 2, int, [w.s('a'), int, w.s('b'), ptr]); // 18
  w.t(12, 'fn', 1, proto); // 19 global func
  const v = w.t(14, 'counter', 0, vol, [1]); // 20
  w.t(15, '.data', 1, 16, [v, 8, 4]); // 21
  w.t(16, 'double', 0, 8); // 22
  w.t(17, 'tag1', 0, outer, [(-1) >>> 0]); // 23
  w.t(18, 'user', 0, int); // 24 type tag
  w.t(8, 'outer_t', 0, outer); // 25
  return parseBtf(w.build(), 'synthetic');
}

describe('BTF parser (synthetic, every kind)', () => {
  const btf = synthetic();

  it('reads all records with their kind data', () => {
    expect(btf.count).toBe(25);
    expect(btf.type(1)).toMatchObject({ kind: 'INT', name: 'int', size: 4, int: { bits: 32, signed: true } });
    expect(btf.type(2).int!.signed).toBe(false);
    expect(btf.type(3)).toMatchObject({ kind: 'PTR', type: 1 });
    expect(btf.type(4).array).toEqual({ type: 1, indexType: 2, nelems: 4 });
    expect(btf.type(10).members![1]).toEqual({ name: 'bits', type: 2, bitOffset: 72, bitfieldSize: 3 });
    expect(btf.type(11).kind).toBe('VOLATILE');
    expect(btf.type(12).kind).toBe('RESTRICT');
    expect(btf.type(14).enumValues).toEqual([
      { name: 'RED', value: 0n },
      { name: 'NEG', value: -1n },
    ]);
    expect(btf.type(15).enumValues![0]!.value).toBe(0xffffffffn);
    expect(btf.type(16)).toMatchObject({ kind: 'ENUM64', size: 8 });
    expect(btf.type(16).enumValues![0]!.value).toBe(0x8000000000000001n);
    expect(btf.type(17).kind).toBe('FWD');
    expect(btf.type(18).params).toEqual([
      { name: 'a', type: 1 },
      { name: 'b', type: 3 },
    ]);
    expect(btf.type(19)).toMatchObject({ kind: 'FUNC', name: 'fn', type: 18, linkage: 1 });
    expect(btf.type(20)).toMatchObject({ kind: 'VAR', name: 'counter', linkage: 1 });
    expect(btf.type(21).vars).toEqual([{ type: 20, offset: 8, size: 4 }]);
    expect(btf.type(22)).toMatchObject({ kind: 'FLOAT', size: 8 });
    expect(btf.type(23)).toMatchObject({ kind: 'DECL_TAG', componentIdx: -1, type: 10 });
    expect(btf.type(24)).toMatchObject({ kind: 'TYPE_TAG', name: 'user' });
  });

  it('computes sizes and offsets through typedefs, const, anonymous members and arrays', () => {
    expect(btf.structSize('outer')).toBe(64);
    expect(btf.structSize('struct outer')).toBe(64);
    expect(btf.structSize('outer_t')).toBe(64); // typedef to the struct
    expect(btf.memberOffset('outer', 'p')).toBe(0);
    expect(btf.memberOffset('outer', 'in')).toBe(16);
    expect(btf.memberOffset('outer', 'in.y')).toBe(20); // through const + typedef
    expect(btf.memberOffset('outer', 'u1')).toBe(24); // anonymous union
    expect(btf.memberOffset('outer', 'a2')).toBe(28); // anonymous struct inside it
    expect(btf.memberOffset('outer', 'arr')).toBe(32);
    expect(btf.memberOffset('outer', 'arr[3]')).toBe(44);
    expect(btf.memberOffset('outer', 'ins[1].y')).toBe(48 + 8 + 4);
    expect(btf.sizeOf(4)).toBe(16);
    expect(btf.sizeOf(3)).toBe(8);
    expect(btf.member('outer', 'bits')).toMatchObject({ bitOffset: 72, bitfieldSize: 3, offset: 9 });
  });

  it('names struct and field in lookup errors', () => {
    expect(() => btf.memberOffset('outer', 'in.z')).toThrow(BtfLookupError);
    expect(() => btf.memberOffset('outer', 'in.z')).toThrow(/struct outer has no member 'z' in .*inner.* \(field path 'in\.z'\); members: x, y/);
    expect(() => btf.memberOffset('outer', 'p.x')).toThrow(/not a struct or union \(a pointer/);
    expect(() => btf.memberOffset('outer', 'bits')).toThrow(/bitfield/);
    expect(() => btf.structSize('nothere')).toThrow(/no struct 'nothere'/);
    expect(() => btf.structSize('later')).toThrow(/only a forward declaration/);
    try {
      btf.memberOffset('outer', 'nope');
    } catch (e) {
      expect(e).toMatchObject({ structName: 'outer', fieldPath: 'nope' });
    }
  });

  it('rejects bad data', () => {
    expect(() => parseBtf(Buffer.alloc(30), 'zero')).toThrow(/bad BTF magic/);
  });
});

describe('BTF of Debian 6.1.0-56-amd64 (from vmlinuz)', () => {
  let tree: KernelTree & { vmlinuz: string };
  let btf: Btf;
  beforeAll(async () => {
    tree = await fetchKernel('6.1.0-56-amd64');
    btf = await loadBtf(tree);
  });

  it('finds the xz payload and caches the decompressed vmlinux', async () => {
    const { format, payload } = bzImagePayload(tree.vmlinuz);
    expect(format).toBe('xz');
    expect(payload.length).toBe(8122480);
    const vmlinux = await vmlinuxFor(tree);
    expect(vmlinux).toBe(`${tree.workDir}/vmlinux`);
    expect(existsSync(vmlinux)).toBe(true);
    expect(statSync(vmlinux).size).toBe(65906612);
    expect(readElfSection(vmlinux, '.BTF').length).toBe(0x42866d);
  });

  it('parses all types', () => {
    expect(btf.count).toBe(100750); // the type section parses to its exact end (checked by parseBtf)
    expect(btf.findStruct('cgroup').kind).toBe('STRUCT');
  });

  // Expected values: clang-14 offsetof/sizeof over the 6.1.0-56-amd64 headers (CIEL_LAYOUT,
  // test/kernel/fixtures/layouts.c) and `pahole -C` v1.24 on the same vmlinux; both agree.
  it('matches the headers/pahole for struct cgroup', () => {
    expect(btf.structSize('cgroup')).toBe(1792);
    expect(btf.memberOffset('cgroup', 'self')).toBe(0);
    expect(btf.memberOffset('cgroup', 'self.refcnt')).toBe(16);
    expect(btf.memberOffset('cgroup', 'flags')).toBe(200);
    expect(btf.memberOffset('cgroup', 'level')).toBe(208);
    expect(btf.memberOffset('cgroup', 'kn')).toBe(248);
    expect(btf.memberOffset('cgroup', 'subsys')).toBe(544);
    expect(btf.memberOffset('cgroup', 'root')).toBe(656);
    expect(btf.memberOffset('cgroup', 'rstat_cpu')).toBe(920);
    expect(btf.memberOffset('cgroup', 'bstat.cputime.sum_exec_runtime')).toBe(984);
  });

  it('matches for cgroup_subsys_state and kernfs_node (anonymous union)', () => {
    expect(btf.structSize('cgroup_subsys_state')).toBe(200);
    expect(btf.memberOffset('cgroup_subsys_state', 'ss')).toBe(8);
    expect(btf.memberOffset('cgroup_subsys_state', 'sibling')).toBe(32);
    expect(btf.memberOffset('cgroup_subsys_state', 'children')).toBe(48);
    expect(btf.memberOffset('cgroup_subsys_state', 'id')).toBe(80);
    expect(btf.memberOffset('cgroup_subsys_state', 'serial_nr')).toBe(88);
    expect(btf.memberOffset('cgroup_subsys_state', 'parent')).toBe(192);
    expect(btf.structSize('kernfs_node')).toBe(128);
    expect(btf.memberOffset('kernfs_node', 'parent')).toBe(8);
    expect(btf.memberOffset('kernfs_node', 'name')).toBe(16);
    expect(btf.memberOffset('kernfs_node', 'dir.subdirs')).toBe(64);
    expect(btf.memberOffset('kernfs_node', 'priv')).toBe(96);
    expect(btf.memberOffset('kernfs_node', 'id')).toBe(104);
    expect(btf.memberOffset('kernfs_node', 'mode')).toBe(114);
  });

  it('matches for mem_cgroup and task_struct', () => {
    expect(btf.structSize('mem_cgroup')).toBe(2240);
    expect(btf.memberOffset('mem_cgroup', 'memory')).toBe(256);
    expect(btf.memberOffset('mem_cgroup', 'memory.usage')).toBe(256);
    expect(btf.memberOffset('mem_cgroup', 'memsw')).toBe(448);
    expect(btf.memberOffset('mem_cgroup', 'vmstats')).toBe(1536);
    expect(btf.memberOffset('mem_cgroup', 'nodeinfo')).toBe(2192);
    expect(btf.structSize('task_struct')).toBe(9792);
    expect(btf.memberOffset('task_struct', '__state')).toBe(24);
    expect(btf.memberOffset('task_struct', 'se.sum_exec_runtime')).toBe(200);
    expect(btf.memberOffset('task_struct', 'tasks')).toBe(2192);
    expect(btf.memberOffset('task_struct', 'mm')).toBe(2272);
    expect(btf.memberOffset('task_struct', 'pid')).toBe(2416);
    expect(btf.memberOffset('task_struct', 'comm')).toBe(2976);
    expect(btf.memberOffset('task_struct', 'cgroups')).toBe(3600);
    expect(btf.memberOffset('task_struct', 'cg_list')).toBe(3608);
  });

  it('reads a module\'s split BTF on top of vmlinux (veth.ko; values from pahole --btf_base)', () => {
    const veth = loadModuleBtf(`${tree.modulesDir}/kernel/drivers/net/veth.ko`, btf);
    expect(veth.count).toBeGreaterThan(btf.count);
    expect(veth.structSize('veth_priv')).toBe(40);
    expect(veth.memberOffset('veth_priv', 'rq')).toBe(24);
    expect(veth.structSize('veth_rq')).toBe(768);
    expect(veth.memberOffset('veth_rq', 'stats')).toBe(432);
    expect(veth.structSize('cgroup')).toBe(1792); // base types stay visible
    expect(() => btf.structSize('veth_priv')).toThrow(/no struct 'veth_priv'/);
  });

  it('names struct and field when missing', () => {
    expect(() => btf.memberOffset('cgroup', 'self.nope')).toThrow(
      /struct cgroup has no member 'nope' in struct cgroup_subsys_state \(field path 'self\.nope'\)/,
    );
    expect(() => btf.structSize('no_such_struct')).toThrow(/no struct 'no_such_struct'/);
  });
});
