// The Xen backend without a hypervisor: library loading, error messages, struct layouts against
// the installed headers, and the batching logic with a fake of the C functions.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ToolError } from '../../../common/errors.ts';
import { mapFileReadOnly } from '../../../vmi/backends/mmap.ts';
import {
  XEN_ABI,
  XEN_LIBRARIES,
  XenBackend,
  type XenLibs,
  loadXenLibs,
  maskCr3,
  planBatches,
  rangesFromFrames,
} from '../../../vmi/backends/xen.ts';

const LIBDIR = '/usr/lib/x86_64-linux-gnu';
const TMP = mkdtempSync(join(tmpdir(), 'ciel-xen-test-'));
afterAll(() => rmSync(TMP, { recursive: true, force: true }));
let tmpN = 0;
const tmpDir = () => {
  const d = join(TMP, String(tmpN++));
  mkdirSync(d);
  return d;
};
const HAVE_LIBS = existsSync(join(LIBDIR, XEN_LIBRARIES.foreignmemory)) && existsSync(join(LIBDIR, XEN_LIBRARIES.ctrl));
const HAVE_HEADERS = existsSync('/usr/include/xenctrl.h') && existsSync('/usr/include/xen/hvm/save.h');
const HAVE_CC = (() => {
  try {
    execFileSync('cc', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

describe('Xen ABI', () => {
  it.skipIf(!HAVE_HEADERS || !HAVE_CC)('struct layouts and constants match the installed headers (libxen-dev)', () => {
    const d = tmpDir();
    const src = join(d, 'abi.c');
    writeFileSync(
      src,
      `#include <stdio.h>
#include <stddef.h>
#include <xenctrl.h>
#include <xen/hvm/save.h>
int main(void) {
  printf("{\\"hvmHwCpu\\":{\\"size\\":%zu,\\"cr0\\":%zu,\\"cr3\\":%zu,\\"cr4\\":%zu},",
    sizeof(struct hvm_hw_cpu), offsetof(struct hvm_hw_cpu, cr0), offsetof(struct hvm_hw_cpu, cr3), offsetof(struct hvm_hw_cpu, cr4));
  printf("\\"domainInfo\\":{\\"size\\":%zu,\\"domain\\":%zu,\\"flags\\":%zu,\\"totPages\\":%zu,\\"maxPages\\":%zu,\\"nrOnlineVcpus\\":%zu,\\"maxVcpuId\\":%zu},",
    sizeof(xc_domaininfo_t), offsetof(xc_domaininfo_t, domain), offsetof(xc_domaininfo_t, flags), offsetof(xc_domaininfo_t, tot_pages),
    offsetof(xc_domaininfo_t, max_pages), offsetof(xc_domaininfo_t, nr_online_vcpus), offsetof(xc_domaininfo_t, max_vcpu_id));
  printf("\\"HVM_SAVE_CODE_CPU\\":%d,\\"XEN_DOMINF_dying\\":%u,\\"XEN_DOMINF_hvm_guest\\":%u,\\"XEN_DOMINF_shutdown\\":%u,\\"XEN_DOMINF_paused\\":%u,\\"PAGE_SHIFT\\":%d,",
    HVM_SAVE_CODE(CPU), XEN_DOMINF_dying, XEN_DOMINF_hvm_guest, XEN_DOMINF_shutdown, XEN_DOMINF_paused, XC_PAGE_SHIFT);
  printf("\\"pfn\\":%zu,\\"domctlVersion\\":%d}\\n", sizeof(xen_pfn_t), XEN_DOMCTL_INTERFACE_VERSION);
  return 0;
}
`,
    );
    execFileSync('cc', ['-D__XEN_TOOLS__', '-o', join(d, 'abi'), src]);
    const got = JSON.parse(execFileSync(join(d, 'abi'), { encoding: 'utf8' }));
    expect(got.pfn).toBe(8); // xen_pfn_t is uint64: the BigUint64Array of frame numbers
    expect(got.domctlVersion).toBe(0x15); // Xen 4.17
    delete got.pfn;
    delete got.domctlVersion;
    expect(got).toEqual(XEN_ABI);
  });

  it('masks CR3 to the page-table root (PCID bits and bit 12 off)', () => {
    expect(maskCr3(0x1234_5000n)).toBe(0x1234_4000n);
    expect(maskCr3(0x8000_0000_0abc_d0ffn)).toBe(0x0abc_c000n);
    expect(maskCr3(0x1000n)).toBe(0n);
  });
});

describe('loading', () => {
  it('a missing library gives a ToolError naming it and the Debian package', async () => {
    const e = await loadXenLibs({ foreignmemory: 'libxenforeignmemory.so.999', ctrl: XEN_LIBRARIES.ctrl }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ToolError);
    expect((e as Error).message).toMatch(/^xen: cannot load libxenforeignmemory\.so\.999 \(.*\); on Debian 12: apt-get install libxenforeignmemory1$/);
    const e2 = await loadXenLibs({ foreignmemory: XEN_LIBRARIES.foreignmemory, ctrl: 'libxenctrl.so.3.0' }).catch((x: unknown) => x);
    if (HAVE_LIBS) expect((e2 as Error).message).toMatch(/^xen: cannot load libxenctrl\.so\.3\.0 .*apt-get install libxenmisc4\.17$/);
    else expect((e2 as Error).message).toMatch(/^xen: cannot load libxenforeignmemory\.so\.1 /);
  });

  it.skipIf(!HAVE_LIBS)('the installed 4.17 libraries load and have every function used', async () => {
    const libs = await loadXenLibs();
    for (const k of ['fmemOpen', 'fmemMap2', 'fmemUnmap', 'xcOpen', 'getDomainInfo', 'maximumGpfn', 'hvmGetContextPartial', 'pause', 'unpause', 'reserve'])
      expect(typeof (libs as unknown as Record<string, unknown>)[k]).toBe('function');
    // the reservation helper is plain libc and works anywhere
    const p = libs.reserve(1n << 30n);
    expect(typeof p).toBe('bigint');
    expect(libs.reserve(4096n, p! + 8192n)).toBe(p! + 8192n);
    expect(libs.release(p!, 1n << 30n)).toBe(0);
  });
});

describe('without a hypervisor', () => {
  it.skipIf(existsSync('/dev/xen/privcmd'))('refuses to open when /dev/xen/privcmd is absent', async () => {
    await expect(XenBackend.open(1)).rejects.toThrow(
      'xen: /dev/xen/privcmd is absent: this is not a Xen Dom0 (no Xen hypervisor, or the xen_privcmd driver is not loaded; try modprobe xen-privcmd and mount -t xenfs xenfs /proc/xen)',
    );
  });

  it('refuses a bad domid before touching anything', async () => {
    await expect(XenBackend.open(0)).rejects.toThrow('xen: bad domain id 0 (a guest domid is 1..32751)');
  });

  it.skipIf(!HAVE_LIBS)('with the real libraries but no Xen, xc_interface_open fails clearly', async () => {
    const fakePrivcmd = join(tmpDir(), 'privcmd');
    writeFileSync(fakePrivcmd, '');
    await expect(XenBackend.open(1, { privcmd: fakePrivcmd })).rejects.toThrow(/^xen: xc_interface_open failed: .*\(run as root in Dom0\)$/);
  });
});

/** A fake of the C side: frames are present unless in `holes`; records every call. */
function fake(opts: {
  frames: number;
  holes?: Set<number>;
  hvm?: boolean;
  failBatchAt?: number;
  domid?: number;
  cr3?: bigint;
  cr4?: bigint;
  /** per-vCPU CR3 (vCPUs 0..n-1; max_vcpu_id n-1); a null entry is an offline vCPU (no context) */
  vcpuCr3?: (bigint | null)[];
  /** guest RAM bytes at gpa 0 (else zeros) */
  ram?: Buffer;
}) {
  const calls: string[] = [];
  const maps: { addr: bigint; pfns: number[]; flags: number; prot: number }[] = [];
  let paused = 0;
  // the reservation is real memory (a mapped file holding `ram`): registers() reads the guest's page
  // tables and VMCOREINFO through it, as through Xen's foreign mappings
  const ramFile = join(tmpDir(), 'ram');
  const ram = Buffer.alloc(opts.frames * 4096);
  opts.ram?.copy(ram);
  writeFileSync(ramFile, ram);
  const base = mapFileReadOnly(ramFile).host;
  const libs: XenLibs = {
    fmemOpen: () => 0x1000n,
    fmemClose: () => (calls.push('fmemClose'), 0),
    fmemMap2: (_h, _dom, addr, prot, flags, pfns, err) => {
      const list = [...pfns].map(Number);
      if (opts.failBatchAt !== undefined && list.includes(opts.failBatchAt)) {
        calls.push(`map-fail ${list[0]}`);
        return null;
      }
      maps.push({ addr, pfns: list, flags, prot });
      list.forEach((g, i) => (err[i] = opts.holes?.has(g) ? -22 : 0));
      return addr;
    },
    fmemUnmap: (_h, addr, pages) => (calls.push(`unmap 0x${addr.toString(16)} ${pages}`), 0),
    xcOpen: () => 0x2000n,
    xcClose: () => (calls.push('xcClose'), 0),
    getDomainInfo: (_x, domid, buf) => {
      const d = opts.domid ?? domid;
      buf.writeUInt16LE(d, XEN_ABI.domainInfo.domain);
      buf.writeUInt32LE(opts.hvm === false ? 0 : XEN_ABI.XEN_DOMINF_hvm_guest, XEN_ABI.domainInfo.flags);
      buf.writeBigUInt64LE(BigInt(opts.frames), XEN_ABI.domainInfo.totPages);
      buf.writeUInt32LE(opts.vcpuCr3 ? opts.vcpuCr3.length - 1 : 1, XEN_ABI.domainInfo.maxVcpuId);
      return 1;
    },
    maximumGpfn: (_x, _d, out) => ((out[0] = BigInt(opts.frames - 1)), 0),
    hvmGetContextPartial: (_x, _d, code, inst, buf) => {
      calls.push(`ctx ${code} ${inst} ${buf.length}`);
      const own = opts.vcpuCr3?.[inst];
      if (own === null) return -1;
      buf.writeBigUInt64LE(own ?? opts.cr3 ?? 0x1_2345_6000n | 0x1000n | 0x5n, XEN_ABI.hvmHwCpu.cr3);
      buf.writeBigUInt64LE(opts.cr4 ?? 0x3506f0n, XEN_ABI.hvmHwCpu.cr4);
      return 0;
    },
    pause: () => (paused++, 0),
    unpause: () => (paused--, 0),
    reserve: (bytes, at) => {
      calls.push(at === undefined ? `reserve ${bytes}` : `reserve ${bytes} at 0x${at.toString(16)}`);
      return at ?? base;
    },
    release: (addr, bytes) => (calls.push(`release 0x${addr.toString(16)} ${bytes}`), 0),
    errno: () => 22,
  };
  return { libs, calls, maps, base, paused: () => paused, privcmd: (() => {
    const p = join(tmpDir(), 'privcmd');
    writeFileSync(p, '');
    return p;
  })() };
}

describe('batching arithmetic (fake C side)', () => {
  it('plans batches', () => {
    expect(planBatches(10, 4)).toEqual([
      { first: 0, count: 4 },
      { first: 4, count: 4 },
      { first: 8, count: 2 },
    ]);
    expect(planBatches(8, 4)).toHaveLength(2);
    expect(planBatches(0, 4)).toEqual([]);
    expect(() => planBatches(5, 0)).toThrow(RangeError);
  });

  it('builds ranges from the per-frame results', () => {
    const ok = new Set([0, 1, 2, 5, 9]);
    expect(rangesFromFrames(10, (g) => ok.has(g), 0x1000_0000n)).toEqual([
      { gpa: 0n, length: 0x3000n, host: 0x1000_0000n },
      { gpa: 0x5000n, length: 0x1000n, host: 0x1000_5000n },
      { gpa: 0x9000n, length: 0x1000n, host: 0x1000_9000n },
    ]);
  });

  it('maps the guest in batches into one reservation and reports the holes', async () => {
    // 20 frames; VGA-like hole at 10..12, batch size 8
    const f = fake({ frames: 20, holes: new Set([10, 11, 12]) });
    const be = await XenBackend.open(7, { libs: f.libs, privcmd: f.privcmd, batchFrames: 8 });
    expect(f.calls[0]).toBe(`reserve ${20 * 4096}`);
    expect(f.maps.map((m) => [m.addr - f.base, m.pfns[0], m.pfns.length, m.prot, m.flags])).toEqual([
      [0n, 0, 8, 1, 0x11],
      [8n * 4096n, 8, 8, 1, 0x11],
      [16n * 4096n, 16, 4, 1, 0x11],
    ]);
    expect(be.ranges()).toEqual([
      { gpa: 0n, length: 10n * 4096n, host: f.base },
      { gpa: 13n * 4096n, length: 7n * 4096n, host: f.base + 13n * 4096n },
    ]);
    expect(be.memorySize()).toBe(17n * 4096n);
    expect(be.info).toMatchObject({ domid: 7, hvm: true, totPages: 20n });

    expect(await be.registers()).toEqual({ cr3: 0x1_2345_6000n, cr4: 0x3506f0n });
    expect(f.calls).toContain(`ctx 2 0 ${XEN_ABI.hvmHwCpu.size}`);

    await be.pause();
    await be.pause();
    await be.resume();
    expect(f.paused()).toBe(1);
    f.calls.length = 0;
    await be.close();
    expect(f.paused()).toBe(0); // close() never leaves the guest paused
    expect(f.calls).toEqual([
      `unmap 0x${f.base.toString(16)} 8`,
      `unmap 0x${(f.base + 8n * 4096n).toString(16)} 8`,
      `unmap 0x${(f.base + 16n * 4096n).toString(16)} 4`,
      'fmemClose',
      `release 0x${f.base.toString(16)} ${20 * 4096}`,
      'xcClose',
    ]);
    await expect(be.registers()).rejects.toThrow('xen: backend of domain 7 is closed');
    await be.close(); // idempotent
  });

  it('a batch that fails as a whole is taken back into the reservation and left out', async () => {
    const f = fake({ frames: 12, failBatchAt: 4 });
    const be = await XenBackend.open(3, { libs: f.libs, privcmd: f.privcmd, batchFrames: 4 });
    expect(f.calls).toContain('map-fail 4');
    expect(f.calls).toContain(`reserve ${4 * 4096} at 0x${(f.base + 4n * 4096n).toString(16)}`);
    expect(be.ranges()).toEqual([
      { gpa: 0n, length: 4n * 4096n, host: f.base },
      { gpa: 8n * 4096n, length: 4n * 4096n, host: f.base + 8n * 4096n },
    ]);
    await be.close();
  });

  it('refuses PV guests and unknown domains, and cleans up', async () => {
    const pv = fake({ frames: 4, hvm: false });
    await expect(XenBackend.open(5, { libs: pv.libs, privcmd: pv.privcmd })).rejects.toThrow(
      'xen: domain 5 is a PV guest: only HVM and PVH guests are supported (a PV CR3 holds machine frames)',
    );
    expect(pv.calls).toEqual(['xcClose']);
    const other = fake({ frames: 4, domid: 9 });
    await expect(XenBackend.open(5, { libs: other.libs, privcmd: other.privcmd })).rejects.toThrow('xen: no domain 5 (xl list shows the running domains)');
    await expect(XenBackend.open(5, { libs: other.libs, privcmd: other.privcmd, vcpu: 4 })).rejects.toThrow(/no domain 5/);
    const holes = fake({ frames: 3, holes: new Set([0, 1, 2]) });
    await expect(XenBackend.open(5, { libs: holes.libs, privcmd: holes.privcmd })).rejects.toThrow('xen: domain 5: no guest frame could be mapped');
    expect(holes.calls.slice(-4)).toEqual([`unmap 0x${holes.base.toString(16)} 3`, 'fmemClose', `release 0x${holes.base.toString(16)} ${3 * 4096}`, 'xcClose']);
  });
});

describe('the page-table root of a Xen guest (fake C side, real guest-RAM bytes)', () => {
  // 16 frames: 0x6000 a user process's top-level table without the kernel half (as 7.3's user
  // processes have), 0x2000 and 0x4000 tables mapping the kernel half
  const ram = Buffer.alloc(16 * 4096);
  ram.writeBigUInt64LE(0x9067n, 0x6000); // (bit 12 of a CR3 is the PTI user copy: masked, so not 0x1000)
  for (const i of [256, 273, 511]) ram.writeBigUInt64LE(0xa067n, 0x2000 + i * 8);
  for (const i of [256, 273, 300, 508, 511]) ram.writeBigUInt64LE(0xa067n, 0x4000 + i * 8);

  it('reads every vCPU (an offline one skipped) and walks from the one mapping the kernel, not vCPU 0', async () => {
    const f = fake({ frames: 16, ram, vcpuCr3: [0x6000n, null, 0x2000n] });
    const be = await XenBackend.open(7, { libs: f.libs, privcmd: f.privcmd });
    expect(await be.registers()).toEqual({ cr3: 0x2000n, cr4: 0x3506f0n });
    expect(f.calls.filter((c) => c.startsWith('ctx'))).toEqual([0, 1, 2].map((v) => `ctx 2 ${v} ${XEN_ABI.hvmHwCpu.size}`));
    // a vCPU named explicitly is the one used
    const one = await XenBackend.open(7, { libs: f.libs, privcmd: f.privcmd, vcpu: 0 });
    expect(await one.registers()).toEqual({ cr3: 0x6000n, cr4: 0x3506f0n });
  });

  it('takes init_top_pgt from VMCOREINFO over any vCPU; no vCPU with a context is a ToolError', async () => {
    const withInfo = Buffer.from(ram);
    withInfo.write('OSRELEASE=6.1.0-56-amd64\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff80004000\nNUMBER(phys_base)=0\nKERNELOFFSET=0\n\0', 0x8000, 'latin1');
    const f = fake({ frames: 16, ram: withInfo, vcpuCr3: [0x6000n, 0x2000n] });
    const be = await XenBackend.open(7, { libs: f.libs, privcmd: f.privcmd });
    expect(await be.registers()).toEqual({ cr3: 0x4000n, cr4: 0x3506f0n });
    const off = fake({ frames: 16, ram, vcpuCr3: [null, null] });
    const none = await XenBackend.open(7, { libs: off.libs, privcmd: off.privcmd });
    await expect(none.registers()).rejects.toThrow('xen: xc_domain_hvm_getcontext_partial(dom 7, CPU, vcpu 0) failed: EINVAL (errno 22)');
  });
});
