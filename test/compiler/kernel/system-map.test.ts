import { beforeAll, describe, expect, it } from 'vitest';
import { BadInputError } from '../../../common/errors.ts';
import { fetchKernel } from '../../../compiler/kernel/packages.ts';
import { loadSystemMap, parseSystemMap, type SystemMap } from '../../../compiler/kernel/system-map.ts';

const SMALL = `0000000000000000 D __per_cpu_start
0000000000000000 D fixed_percpu_data
00000000000001ea A kexec_control_code_size
0000000000031c40 D runqueues
0000000000035000 D __per_cpu_end
ffffffff81000000 T _stext
ffffffff81000000 T _text
ffffffff81001000 t helper
ffffffff81002000 t helper
ffffffff81003000 T helper
ffffffff82a1aa40 D init_task
`;

describe('System.map parsing', () => {
  it('parses symbols, types and lookups', () => {
    const m = parseSystemMap(SMALL, 'small.map');
    expect(m.size).toBe(11);
    expect(m.address('init_task')).toBe(0xffffffff82a1aa40n);
    expect(m.lookup('init_task').type).toBe('D');
    expect(m.text).toBe(0xffffffff81000000n);
    expect(m.stext).toBe(0xffffffff81000000n);
    expect(m.all('helper')).toHaveLength(3);
    expect(m.get('helper')!.type).toBe('T'); // the global one wins
    expect(m.has('nope')).toBe(false);
    expect(() => m.lookup('nope')).toThrow(/small\.map: no symbol 'nope'/);
  });

  it('classifies per-CPU symbols by the __per_cpu_start..__per_cpu_end range', () => {
    const m = parseSystemMap(SMALL);
    expect(m.perCpuStart).toBe(0n);
    expect(m.perCpuEnd).toBe(0x35000n);
    expect(m.isPerCpu('runqueues')).toBe(true);
    expect(m.isPerCpu('fixed_percpu_data')).toBe(true);
    expect(m.isPerCpu('kexec_control_code_size')).toBe(false); // absolute constant, not a variable
    expect(m.isPerCpu('__per_cpu_end')).toBe(false);
    expect(m.isPerCpu('init_task')).toBe(false);
  });

  it("rejects Debian's stub System.map with a pointer to the -dbg package", () => {
    const stub = 'ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n';
    expect(() => parseSystemMap(stub, '/boot/System.map-6.1.0-56-amd64')).toThrow(BadInputError);
    expect(() => parseSystemMap(stub)).toThrow(/stub System\.map.*linux-image-<release>-dbg/);
  });

  it('rejects garbage and maps without per-CPU markers', () => {
    expect(() => parseSystemMap('hello\nworld\n', 'x')).toThrow(/no symbols found/);
    expect(() => parseSystemMap('ffffffff81000000 T _text\n', 'x')).toThrow(/__per_cpu_start/);
  });
});

describe('System.map of Debian 6.1.0-56-amd64 (from the -dbg package)', () => {
  let map: SystemMap;
  beforeAll(async () => {
    const tree = await fetchKernel('6.1.0-56-amd64');
    map = loadSystemMap(tree.systemMap);
  });

  it('has the known addresses', () => {
    expect(map.size).toBe(94280);
    expect(map.address('init_task')).toBe(0xffffffff82a1aa40n);
    expect(map.address('cgrp_dfl_root')).toBe(0xffffffff82b349e0n);
    expect(map.address('__per_cpu_offset')).toBe(0xffffffff8241cb60n);
    expect(map.address('page_offset_base')).toBe(0xffffffff82415740n);
    expect(map.address('phys_base')).toBe(0xffffffff82a1a010n);
    expect(map.text).toBe(0xffffffff81000000n);
    expect(map.stext).toBe(0xffffffff81000000n);
  });

  it('classifies per-CPU symbols', () => {
    expect(map.perCpuStart).toBe(0n);
    expect(map.perCpuEnd).toBe(0x35000n);
    expect(map.lookup('runqueues')).toMatchObject({ address: 0x31c40n, perCpu: true });
    expect(map.isPerCpu('init_task')).toBe(false);
    expect(map.isPerCpu('cgrp_dfl_root')).toBe(false);
    expect(map.isPerCpu('__per_cpu_offset')).toBe(false); // the array of per-CPU bases is a normal global
    expect(map.isPerCpu('kexec_control_code_size')).toBe(false);
    const perCpu = map.symbols.filter((s) => s.perCpu);
    expect(perCpu.length).toBeGreaterThan(300);
    expect(perCpu.every((s) => s.address < 0x35000n)).toBe(true);
  });
});
