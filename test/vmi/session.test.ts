// VmSession without a running guest: the ELF dump of the test guest (testbed/elf-dump.ts: cached, made
// once by booting the guest) read as a vmcore and, copied gpa by gpa into a raw file, as a raw memory
// file (page tables from the VMCOREINFO in its RAM). Both must give the same containers. Attach
// failures of the live backends are VmErrors naming the VM, with the cause.
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BadInputError, GuestFaultError, ToolError, VmError } from '../../common/errors.ts';
import { readElfCoreInfo } from '../../vmi/backends/elf-core.ts';
import type { Sample } from '../../vmi/sample.ts';
import { VmSession } from '../../vmi/session.ts';
import { vmTarget } from '../../vmi/target.ts';
import { guestDump, RELEASE } from '../../testbed/elf-dump.ts';
import { GUEST_CONTAINERS } from '../../testbed/guest/containers.ts';

const dir = mkdtempSync(join(tmpdir(), 'ciel-session-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('vmTarget()', () => {
  it('asks for what the backend needs, naming the VM', () => {
    expect(vmTarget({ name: 'web', backend: 'qemu', kernel: RELEASE, qmp: '/q', memory: '/m' })).toEqual({ name: 'web', backend: 'qemu', kernel: RELEASE, qmp: '/q', memory: '/m' });
    expect(vmTarget({ name: 'core', backend: 'vmcore', vmcore: '/c' })).toEqual({ name: 'core', backend: 'vmcore', vmcore: '/c' });
    expect(() => vmTarget({ name: 'web', backend: 'qemu', kernel: RELEASE, memory: '/m' })).toThrow(/^web: the qemu backend needs a QMP socket and a memory file$/);
    // no kernel release: read from the guest at attach (it used to be required: issue 12 item 4)
    expect(vmTarget({ name: 'r', backend: 'raw', memory: '/m' })).toEqual({ name: 'r', backend: 'raw', memory: '/m' });
    expect(() => vmTarget({ name: 'd', backend: 'xen', kernel: RELEASE })).toThrow(/^d: the xen backend needs a domain id$/);
    expect(() => vmTarget({ name: 'x', backend: 'kvm' as never })).toThrow(VmError);
  });
});

describe('attach failures', () => {
  it('a QEMU that is not there: VmError naming the VM, the cause a BadInputError naming the file', async () => {
    const s = new VmSession({ name: 'web', backend: 'qemu', kernel: RELEASE, qmp: join(dir, 'no.sock'), memory: join(dir, 'no.ram') });
    const e = await s.attach().then(() => null, (x: unknown) => x);
    expect(e).toBeInstanceOf(VmError);
    expect((e as VmError).vm).toBe('web');
    expect((e as VmError).message).toMatch(/^web: cannot attach: .*no\.ram: guest memory file missing/);
    expect((e as VmError).detail).toMatch(/^cannot attach: /);
    expect((e as VmError).cause).toBeInstanceOf(BadInputError);
    expect(s.attached).toBe(false);
    await expect(s.sample()).rejects.toThrow(/^web: not attached$/);
  });

  it('xen on a host without /dev/xen/privcmd: VmError whose cause is the ToolError', async () => {
    const e = await VmSession.open({ name: 'dom', backend: 'xen', kernel: RELEASE, domid: 7 }).then(() => null, (x: unknown) => x);
    expect((e as VmError).message).toMatch(/^dom: cannot attach: .*privcmd/);
    expect((e as VmError).cause).toBeInstanceOf(ToolError);
  });

  it('a file that is not a dump: the cause says so', async () => {
    const f = join(dir, 'not-a-core');
    const fd = openSync(f, 'w');
    writeSync(fd, Buffer.alloc(128, 0x41));
    closeSync(fd);
    await expect(VmSession.open({ name: 'core', backend: 'vmcore', vmcore: f })).rejects.toThrow(/^core: cannot attach: .*not an ELF file/);
  });
});

describe('a dump of the test guest, as vmcore and as raw memory', () => {
  let dump: string;
  let raw: string;
  beforeAll(async () => {
    dump = await guestDump();
    // the dump's RAM, each PT_LOAD at its guest-physical address (sparse where the guest has holes)
    raw = join(dir, 'guest.raw');
    const info = readElfCoreInfo(dump);
    const src = openSync(dump, 'r');
    const dst = openSync(raw, 'w');
    const buf = Buffer.alloc(8 << 20);
    try {
      for (const l of info.loads) {
        for (let done = 0n; done < l.length; ) {
          const n = readSync(src, buf, 0, Number(l.length - done < BigInt(buf.length) ? l.length - done : BigInt(buf.length)), Number(l.fileOffset + done));
          writeSync(dst, buf, 0, n, Number(l.gpa + done));
          done += BigInt(n);
        }
      }
    } finally {
      closeSync(src);
      closeSync(dst);
    }
  }, 900_000);

  const ids = (s: Sample) => s.containers.map((c) => c.id).sort();
  const GUEST_IDS = GUEST_CONTAINERS.map((c) => c.id).sort();

  it('vmcore: the kernel release from the dump, a 2 MiB-aligned KASLR slide, every container; no pause for a dump', async () => {
    const s = await VmSession.open({ name: 'core', backend: 'vmcore', vmcore: dump });
    try {
      expect(s.attached).toBe(true);
      expect(s.release).toBe(RELEASE);
      expect(s.kind).toBe('vmcore');
      expect(s.canPause).toBe(false);
      expect(s.slide).not.toBe(0n);
      expect(s.slide % 0x200000n).toBe(0n);
      const a = await s.sample({ consistent: true });
      expect(a.vm).toBe('core');
      expect(a.kernel).toBe(RELEASE);
      expect(a.pause_us).toBeUndefined();
      expect(ids(a)).toEqual(GUEST_IDS);
      expect(a.truncated).toBeUndefined();
      expect(a.tlb_hit_ratio).toBeGreaterThan(0);
      expect(a.tlb_hit_ratio).toBeLessThanOrEqual(1);

      // refresh and re-attach find the same page tables and slide; a still dump reads the same
      const slide = s.slide;
      await s.refresh();
      expect(s.slide).toBe(slide);
      await s.reattach();
      expect(s.attaches).toBe(2);
      expect(s.slide).toBe(slide);
      expect((await s.sample()).containers).toEqual(a.containers);

      // recovery: a fault refreshes and stays attached; another failure detaches
      const fault = new VmError('core', 'guest fault', { cause: new GuestFaultError(0xffff888000000000n, 'page not present', 1) });
      expect(await s.recover(fault)).toBe('refreshed');
      expect(s.attached).toBe(true);
      expect(await s.recover(new Error('QMP went away'))).toBe('detached');
      expect(s.attached).toBe(false);
      expect(await s.recover(new Error('again'))).toBe('detached');
      await s.attach();
      expect((await s.sample()).containers).toEqual(a.containers);
    } finally {
      await s.close();
      await s.close(); // twice is fine
    }
  });

  it('raw: page tables from the VMCOREINFO in RAM; the same numbers as the vmcore', async () => {
    const core = await VmSession.open({ name: 'core', backend: 'vmcore', vmcore: dump });
    const mem = await VmSession.open(vmTarget({ name: 'mem', backend: 'raw', memory: raw, kernel: RELEASE }));
    try {
      expect(mem.kind).toBe('raw');
      expect(mem.slide).toBe(core.slide);
      const [a, b] = [await core.sample(), await mem.sample()];
      expect(b.vm).toBe('mem');
      expect(ids(b)).toEqual(GUEST_IDS);
      expect(b.containers).toEqual(a.containers);
    } finally {
      await core.close();
      await mem.close();
    }
  });

  it('serialises concurrent operations of one session (no sample runs under an attach or a close)', async () => {
    const s = new VmSession({ name: 'core', backend: 'vmcore', vmcore: dump });
    const order: string[] = [];
    const ops = [
      s.attach().then(() => order.push('attach')),
      s.sample().then(() => order.push('sample')),
      s.close().then(() => order.push('close')),
      s.sample().then(
        () => order.push('sample after close'),
        (e: Error) => order.push(e.message),
      ),
    ];
    await Promise.all(ops);
    expect(order).toEqual(['attach', 'sample', 'close', 'core: not attached']);
  });
});
