// Runs the monitors' logic natively on a fake guest (test/kernel-src/fake/fake_guest.c: cgroup
// trees, rstat, memcg, blkcg, pids, cpuacct, css_sets, tasks, netns, veth/lo/generic devices
// built in host memory with the guest's own struct layouts). The monitor IR is linked without
// the g_map pass: host pointers stand in for guest pointers. Every expected number below is
// derived by hand in the comments of fake_guest.c from the 6.1 flush rules in ciel_cgroup.h.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { cacheDir } from '../../common/cache.ts';
import { fetchHeaders } from '../../compiler/kernel/packages.ts';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '../..');
const KSRC = join(ROOT, 'kernel-src');
// where fetchHeaders() extracts (CIEL_CACHE honoured), unless CIEL_KERNELS names another tree
const KERNELS = process.env.CIEL_KERNELS ?? cacheDir('kernels');
const PAGE = 4096;

// flags (ciel_abi.h)
const F = {
  CPU: 1, MEM: 2, IO: 4, PIDS: 8, NET: 16, TASK: 32, ROOT: 64, DYING: 128, VETH: 512, LOOPBACK: 1024,
  GENERIC: 2048, NODEV: 4096, V1: 8192, KCPUSTAT: 16384, DEPTH_TRUNC: 32768, NOT_ASKED: 65536,
};
const H = { TRUNC_OUT: 1, TRUNC_LIMIT: 2, TRUNC_DEPTH: 8 };

interface Rec {
  path: string; cpu: number; mem: number; rss: number; cache: number; io_r: number; io_w: number;
  rx_b: number; tx_b: number; rx_p: number; tx_p: number; pids: number; tasks: number; id: number;
  level: number; flags: number; hier: number; parent: number; task: boolean; mask: number;
}
interface Scenario { scenario: string; ret: number; hdr?: Record<string, number>; recs?: Rec[] }

function build(ver: string): Map<string, Scenario> {
  const dir = mkdtempSync(join(tmpdir(), `ciel-fake-${ver}-`));
  const env = { ...process.env, CIEL_KERNELS: KERNELS };
  execFileSync(join(KSRC, 'dev-compile.sh'), ['--kernel', ver, dir], { env, stdio: 'pipe' });
  execFileSync(join(KSRC, 'dev-compile.sh'), ['--kernel', ver, dir], {
    env: { ...env, SOURCES: join(import.meta.dirname, 'fake/fake_guest.c') }, stdio: 'pipe',
  });
  execFileSync('clang-14', ['-O1', '-w', '-I', KSRC, '-o', join(dir, 'run'), join(dir, 'cgroup_v2.ll'), join(dir, 'cgroup_v1.ll'),
    join(dir, 'fake_guest.ll'), join(import.meta.dirname, 'fake/run_fake.c')], { stdio: 'pipe' });
  const out = execFileSync(join(dir, 'run'), { encoding: 'utf8' });
  return new Map(out.trim().split('\n').map((l) => JSON.parse(l) as Scenario).map((s) => [s.scenario, s]));
}

const byPath = (s: Scenario) => new Map(s.recs!.map((r) => [r.path, r]));

for (const ver of ['6.1.0-56-amd64', '6.1.0-56-rt-amd64']) {
  describe(`monitors on a fake guest (${ver} headers)`, () => {
    let S: Map<string, Scenario>;
    beforeAll(async () => {
      // fetched (and cached under ${CIEL_CACHE:-~/.cache/ciel}) when missing, instead of skipping on a fresh machine
      if (!existsSync(join(KERNELS, ver, 'usr/src', `linux-headers-${ver}`, 'include/generated'))) await fetchHeaders(ver, { onProgress: () => {} });
      S = build(ver);
    }, 900_000);

    it('v2: header', () => {
      const s = S.get('v2')!;
      expect(s.ret).toBe(4);
      expect(s.hdr).toMatchObject({
        magic: 0x4c454943, abi_version: 2, hdr_size: 64, rec_size: 384, nr_records: 4, nr_seen: 5, flags: 0,
        cgroup_mode: 2 /* hybrid */, nr_v1_roots: 1, nr_cpus: 2, nr_cpu_ids: 2, nr_nodes: 1, dfl_nr_descendants: 4,
      });
      // the v1 hierarchy's controllers (cpuacct|memory|io): every one has a css on its /x
      expect(s.hdr!.v1_subsys_mask).toBe(byPath(S.get('v1')!).get('/x')!.mask);
      expect(s.recs!.map((r) => [r.path, r.level, r.parent, r.id])).toEqual([
        ['/', 0, 0xffffffff, 1], ['/a', 1, 0, 10], ['/a/b', 2, 1, 11], ['/a/b/d', 3, 2, 12],
      ]);
    });

    it('v2: cpu.stat usage = flushed bstat + own and descendants\' pending deltas; root from kernel_cpustat', () => {
      const r = byPath(S.get('v2')!);
      expect(r.get('/')!.cpu).toBe(320);                  // 100+1+10+2+3+4 + 200, idle excluded
      expect(r.get('/')!.flags & F.KCPUSTAT).toBeTruthy();
      expect(r.get('/a')!.cpu).toBe(1000 + 10 + (22 + 50) + 2);
      expect(r.get('/a/b')!.cpu).toBe(500 + 22 + 2);
      expect(r.get('/a/b/d')!.cpu).toBe(100 + 2);
    });

    it('v2: memory.current, memory.stat anon/file (flushed + pending below)', () => {
      const r = byPath(S.get('v2')!);
      expect(r.get('/a')!.mem).toBe(300 * PAGE);
      expect(r.get('/a')!.rss).toBe((100 + 5 + 10 + 5) * PAGE);
      expect(r.get('/a')!.cache).toBe((200 + 7) * PAGE);
      expect(r.get('/a/b')!.rss).toBe((40 + 5) * PAGE);
      expect(r.get('/a/b')!.cache).toBe((60 + 7) * PAGE);
      expect(r.get('/a/b/d')!).toMatchObject({ mem: 7 * PAGE, rss: 0, cache: 7 * PAGE });
      // root: mem_cgroup_usage(root) = anon + file of the hierarchical stats, not the counter
      expect(r.get('/')!).toMatchObject({ rss: 1020 * PAGE, cache: 2007 * PAGE, mem: 3027 * PAGE });
    });

    it('v2: io.stat rbytes/wbytes summed over online blkgs, pending included', () => {
      const r = byPath(S.get('v2')!);
      expect(r.get('/a')!).toMatchObject({ io_r: 1000 + 10, io_w: 2000 + 20 });
      expect(r.get('/a/b')!).toMatchObject({ io_r: 300, io_w: 30 + 10 });
      expect(r.get('/a/b/d')!).toMatchObject({ io_r: 0, io_w: 0 });
      expect(r.get('/a/b/d')!.flags & F.IO).toBeTruthy();
      expect(r.get('/')!.flags & F.IO).toBe(0);
    });

    it('v2: pids, tasks, network per driver', () => {
      const r = byPath(S.get('v2')!);
      expect([...r.values()].map((x) => x.pids)).toEqual([9, 5, 3, 1]);
      expect([...r.values()].map((x) => x.tasks)).toEqual([0, 2, 0, 1]);
      // veth (tstats, as in 6.1.0-56): rx = own tstats rx (0) + own rq XDP (3/250) + peer tstats tx (20/3000);
      // tx = own tstats tx (11/1100) + peer rq XDP (4/400)
      expect(r.get('/a')!).toMatchObject({ rx_p: 23, rx_b: 3250, tx_p: 15, tx_b: 1500, task: true });
      expect(r.get('/a')!.flags & (F.NET | F.VETH | F.TASK)).toBe(F.NET | F.VETH | F.TASK);
      expect(r.get('/a/b/d')!).toMatchObject({ rx_b: 77, tx_b: 88, rx_p: 7, tx_p: 8 });
      expect(r.get('/a/b/d')!.flags & F.GENERIC).toBeTruthy();
      expect(r.get('/a/b')!.flags & (F.NET | F.TASK)).toBe(0);
      const lo = byPath(S.get('v2_lo')!);
      expect(lo.get('/a')!).toMatchObject({ rx_b: 500, tx_b: 500, rx_p: 5, tx_p: 5 });
      expect(lo.get('/a')!.flags & F.LOOPBACK).toBeTruthy();
      expect(lo.get('/a/b/d')!.flags & F.NODEV).toBeTruthy();
      // pre-backport veth (own lstats, no pcpu_stat_type): lstats are tx
      const v0 = byPath(S.get('v2_veth0')!).get('/a/b/d')!;
      expect(v0).toMatchObject({ tx_p: 3, tx_b: 300, rx_p: 0, rx_b: 0 });
      expect(v0.flags & F.VETH).toBeTruthy();
      // generic driver: dev->stats + core tstats
      const br = byPath(S.get('v2_br0')!).get('/a/b/d')!;
      expect(br).toMatchObject({ rx_p: 2, rx_b: 1 + 20, tx_p: 4, tx_b: 40 });
      expect(br.flags & F.GENERIC).toBeTruthy();
    });

    it('v2: dying cgroups only on request; limits, depth and buffer truncation', () => {
      const dying = S.get('v2_dying')!;
      expect(dying.ret).toBe(5);
      expect(byPath(dying).get('/c')!).toMatchObject({ cpu: 70, flags: F.CPU | F.DYING });

      const lim = S.get('v2_limit')!;
      expect(lim.ret).toBe(3);
      expect(lim.hdr!.flags & H.TRUNC_LIMIT).toBeTruthy();
      expect(lim.recs!.every((x) => (x.flags & F.NET) === 0)).toBe(true); // CIEL_ARG_NO_NET

      const depth = S.get('v2_depth')!;
      expect(depth.recs!.map((x) => x.path)).toEqual(['/', '/a']);
      expect(depth.hdr!.flags & H.TRUNC_DEPTH).toBeTruthy();
      expect(depth.recs![1].flags & F.DEPTH_TRUNC).toBeTruthy();

      const small = S.get('v2_small')!;
      expect(small.ret).toBe(2);
      expect(small.hdr!.flags & H.TRUNC_OUT).toBeTruthy();
      expect(small.recs![1]).toMatchObject({ path: '/a', cpu: 1084 }); // descendants still counted

      expect(S.get('v2_tiny')!.ret).toBe(-28);  // -ENOSPC
      expect(S.get('v2_badin')!.ret).toBe(-22); // -EINVAL
    });

    it('hostile memory: cycles end at the bounds, flagged', () => {
      const s = S.get('v2_cycles')!;
      expect(s.ret).toBe(50);                                   // stopped by args.max_cgroups
      expect(s.hdr!.flags & H.TRUNC_LIMIT).toBeTruthy();
      expect(s.hdr!.flags & 0x20 /* CIEL_HDR_TRUNC_LIST */).toBeTruthy(); // cset_links / device list cycles
      expect(s.recs!.slice(3).every((r) => r.path === '/a/b/d')).toBe(true);
    });

    it('v1: cpuacct.usage, memory usage/rss/cache (local), blkio bytes (local per-CPU)', () => {
      const s = S.get('v1')!;
      expect(s.ret).toBe(2);
      const r = byPath(s);
      expect(r.get('/')!).toMatchObject({ cpu: 300, mem: 34 * PAGE, rss: 0, cache: 0, hier: 3, level: 0 });
      expect(r.get('/x')!).toMatchObject({
        cpu: 40, mem: 50 * PAGE, rss: 10 * PAGE, cache: 8 * PAGE, io_r: 512, io_w: 64, hier: 3, tasks: 2,
        rx_b: 3250, tx_b: 1500,
      });
      expect(r.get('/x')!.flags & F.V1).toBeTruthy();
      expect(S.get('v1_other')!.ret).toBe(0);
    });

    it('CIEL_ARG_CONTAINERS_ONLY: full numbers for the root and Docker\'s containers (and below), the rest walked only', () => {
      const ID = '0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef';
      const full = S.get('v2')!.recs!;
      const fullV1 = S.get('v1')!.recs!;
      const zeros = { cpu: 0, mem: 0, rss: 0, cache: 0, io_r: 0, io_w: 0, rx_b: 0, tx_b: 0, pids: 0, tasks: 0, task: false };
      // systemd driver: /a/docker-<id>.scope and its child are containers, /a is not
      const sd = S.get('v2_only_systemd')!;
      expect(sd.recs!.map((r) => [r.path, r.id, r.level, r.parent])).toEqual([
        ['/', 1, 0, 0xffffffff], ['/a', 10, 1, 0], [`/a/docker-${ID}.scope`, 11, 2, 1], [`/a/docker-${ID}.scope/d`, 12, 3, 2],
      ]);
      // every number read is the same as without the flag, the root's hierarchical memory included
      for (const i of [0, 2, 3]) expect({ ...sd.recs![i], path: '' }).toEqual({ ...full[i], path: '' });
      expect(sd.recs![1]).toMatchObject({ ...zeros, flags: F.NOT_ASKED, mask: full[1].mask });
      // cgroupfs driver: /docker/<id>
      const cf = S.get('v2_only_cgroupfs')!;
      expect(cf.recs!.map((r) => r.path)).toEqual(['/', '/docker', `/docker/${ID}`, `/docker/${ID}/d`]);
      for (const i of [0, 2, 3]) expect({ ...cf.recs![i], path: '' }).toEqual({ ...full[i], path: '' });
      expect(cf.recs![1].flags).toBe(F.NOT_ASKED);
      // no container (plain names, near misses): only the root is read, and it is still exact
      for (const name of ['plain', 'nearmiss']) {
        const p = S.get(`v2_only_${name}`)!;
        expect(p.recs![0]).toEqual(full[0]);
        expect(p.recs!.slice(1).map((r) => r.flags)).toEqual([F.NOT_ASKED, F.NOT_ASKED, F.NOT_ASKED]);
        expect(p.recs!.slice(1).every((r) => r.cpu === 0 && r.mem === 0 && r.rss === 0 && r.pids === 0)).toBe(true);
      }
      // v1: the root and /docker-<id>.scope as without the flag; a bare id below the root is no container
      const v1 = S.get('v1_only_systemd')!;
      expect(v1.recs!.map((r) => r.path)).toEqual(['/', `/docker-${ID}.scope`]);
      for (const i of [0, 1]) expect({ ...v1.recs![i], path: '' }).toEqual({ ...fullV1[i], path: '' });
      const v1n = S.get('v1_only_nearmiss')!;
      expect(v1n.recs![0]).toEqual(fullV1[0]);
      expect(v1n.recs![1]).toMatchObject({ ...zeros, path: `/${ID}`, flags: F.V1 | F.NOT_ASKED });
    });
  });
}
