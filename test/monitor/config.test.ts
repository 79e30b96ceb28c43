// monitor/config.ts (kept under test/view: the daemon's operator-facing pieces)
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig, parseConfig } from '../../monitor/config.ts';
import { BadInputError } from '../../common/errors.ts';

const F = '/etc/ciel/ciel.json';
const ok = (o: unknown) => parseConfig(JSON.stringify(o), F);
const err = (o: unknown) => {
  try {
    parseConfig(typeof o === 'string' ? o : JSON.stringify(o), F);
  } catch (e) {
    expect(e).toBeInstanceOf(BadInputError);
    return (e as Error).message;
  }
  throw new Error('no error');
};
const vm = (v: Record<string, unknown>) => ({ vms: [{ name: 'web', backend: 'qemu', qmp: '/run/web.qmp', memory: '/dev/shm/web', kernel: '6.1.0-56-amd64', ...v }] });

describe('config', () => {
  it('parses all four backends, defaults the interval, resolves relative paths against the file', () => {
    const c = ok({
      vms: [
        { name: 'web', backend: 'qemu', qmp: 'run/web.qmp', memory: '/dev/shm/web', kernel: '6.1.0-56-amd64', disk: 'images/web.qcow2', interval: 0.5 },
        { name: 'db', backend: 'xen', domid: 3, kernel: '6.1.0-47-cloud-amd64' },
        { name: 'dump', backend: 'vmcore', vmcore: '/var/crash/vmcore', kernel: '6.1.0-56-amd64' },
        { name: 'raw.1', backend: 'raw', memory: 'ram.bin', kernel: '6.1.0-56-rt-amd64' },
      ],
    });
    expect(c.vms).toEqual([
      { name: 'web', backend: 'qemu', qmp: '/etc/ciel/run/web.qmp', memory: '/dev/shm/web', kernel: '6.1.0-56-amd64', disk: '/etc/ciel/images/web.qcow2', interval: 0.5 },
      { name: 'db', backend: 'xen', domid: 3, kernel: '6.1.0-47-cloud-amd64', interval: 1 },
      { name: 'dump', backend: 'vmcore', vmcore: '/var/crash/vmcore', kernel: '6.1.0-56-amd64', interval: 1 },
      { name: 'raw.1', backend: 'raw', memory: '/etc/ciel/ram.bin', kernel: '6.1.0-56-rt-amd64', interval: 1 },
    ]);
  });

  it('names the file and the bad field', () => {
    expect(err('{"vms": [ }')).toMatch(/^\/etc\/ciel\/ciel\.json: not valid JSON( at line 1, column \d+)?: Unexpected token/);
    expect(err('{\n  "vms": [\n    {"name": "a",,}\n  ]\n}')).toMatch(/^\/etc\/ciel\/ciel\.json: not valid JSON at line 3, column 18: /);
    expect(err([])).toBe(`${F}: (top level): must be an object with "vms" (got an array)`);
    expect(err({})).toBe(`${F}: vms: missing`);
    expect(err({ vms: [] })).toBe(`${F}: vms: must list at least one VM`);
    expect(err({ vms: {} })).toBe(`${F}: vms: must be an array (got an object)`);
    // every wrong field is named: the unknown one first, the others on lines of their own
    expect(err({ vms: [], extra: 1 })).toBe(`${F}: extra: unknown field (expected only "vms")\n  also vms: must list at least one VM`);
    expect(err(vm({ backend: 'kvm' }))).toBe(`${F}: vms[0].backend: must be one of qemu, vmcore, xen, raw, libvirt (got "kvm")`);
    expect(err(vm({ name: undefined }))).toBe(`${F}: vms[0].name: missing`);
    expect(err(vm({ name: 'a b' }))).toBe(`${F}: vms[0].name: must be letters, digits, '.', '_' or '-' (got "a b")`);
    expect(err(vm({ kernel: 6 }))).toBe(`${F}: vms[0].kernel: must be a non-empty string (got number 6)`);
    expect(err(vm({ kernel: 'latest' }))).toBe(`${F}: vms[0].kernel: must be a kernel release like 6.1.0-56-amd64 (got "latest")`);
    expect(err(vm({ qmp: undefined }))).toBe(`${F}: vms[0].qmp: missing (backend qemu needs qmp and memory)`);
    expect(err(vm({ domid: 3 }))).toBe(`${F}: vms[0].domid: not used by backend qemu (only by xen)`);
    expect(err(vm({ intervall: 2 }))).toMatch(/^\/etc\/ciel\/ciel\.json: vms\[0\]\.intervall: unknown field/);
    expect(err(vm({ interval: 0 }))).toBe(`${F}: vms[0].interval: must be a number of seconds between 0.01 and 86400 (got number 0)`);
    expect(err(vm({ interval: '1s' }))).toBe(`${F}: vms[0].interval: must be a number of seconds between 0.01 and 86400 (got "1s")`);
    expect(err({ vms: [{ name: 'x', backend: 'xen', kernel: '6.1.0-1-amd64', domid: 0 }] })).toBe(
      `${F}: vms[0].domid: must be a guest domain id, an integer 1..32751 (got number 0)`,
    );
    expect(err({ vms: [{ name: 'x', backend: 'xen', kernel: '6.1.0-1-amd64', domid: 2 }, 'y'] })).toBe(`${F}: vms[1]: must be an object (got "y")`);
    const two = vm({});
    two.vms.push({ ...two.vms[0] });
    expect(err(two)).toBe(`${F}: vms[1].name: duplicate VM name "web" (also vms[0])`);
  });

  it('loads from disk and reports an unreadable file', () => {
    const d = mkdtempSync(join(tmpdir(), 'ciel-cfg-'));
    const f = join(d, 'c.json');
    writeFileSync(f, JSON.stringify(vm({ disk: 'web.img' })));
    expect(loadConfig(f).vms[0].disk).toBe(join(d, 'web.img'));
    expect(() => loadConfig(join(d, 'nope.json'))).toThrow(`${join(d, 'nope.json')}: cannot read the config: ENOENT`);
    rmSync(d, { recursive: true, force: true });
  });
});
