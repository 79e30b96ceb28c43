// The daemon's control flow without a guest: attach failures are reported and retried (and count as
// rounds), single-VM fail-fast, a vmcore that cannot be read ends its loop, abort ends every loop,
// and one failing VM does not stop another. The --prometheus address parser.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseListen } from '../../monitor/listen-address.ts';
import { runVms, runVm, type MonitoredVm, type ErrorKind } from '../../monitor/loop.ts';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'ciel-daemon-test-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function recorder() {
  const errors: { vm: string; kind: ErrorKind; message: string; at: number }[] = [];
  const samples: string[] = [];
  return {
    errors,
    samples,
    h: {
      onSample: (s: { vm: string }) => samples.push(s.vm),
      onError: (vm: string, e: Error, kind: ErrorKind) => errors.push({ vm, kind, message: e.message, at: performance.now() }),
    },
  };
}

const missingQemu = (name: string): MonitoredVm => ({
  name,
  backend: 'qemu',
  qmp: join(dir, `${name}.sock`),
  memory: join(dir, `${name}.ram`),
  kernel: '6.1.0-56-amd64',
  intervalMs: 100,
});

describe('monitor/loop', () => {
  it('reports an unattachable VM, retries it with a growing backoff, and counts failed attempts as rounds', async () => {
    const r = recorder();
    const t0 = performance.now();
    const res = await runVm(missingQemu('gone'), r.h, { count: 4, retryMinMs: 20, retryMaxMs: 80 });
    expect(res).toMatchObject({ vm: 'gone', samples: 0, errors: 4 });
    expect(res.fatal).toBeUndefined();
    expect(r.errors.map((e) => e.kind)).toEqual(['open', 'open', 'open', 'open']);
    expect(r.errors[0].message).toMatch(/cannot attach: .*gone\.ram.*guest memory file missing.*\(retrying in 20 ms\)/);
    // 20, 40, 80, 80 ms between attempts
    const gaps = r.errors.slice(1).map((e, i) => e.at - r.errors[i].at);
    expect(gaps[0]).toBeGreaterThanOrEqual(18);
    expect(gaps[1]).toBeGreaterThanOrEqual(38);
    expect(gaps[2]).toBeGreaterThanOrEqual(78);
    expect(performance.now() - t0).toBeLessThan(5000);
  });

  it('fail-fast (single VM on the command line): the first attach error ends the loop as fatal', async () => {
    const r = recorder();
    const res = await runVm(missingQemu('once'), r.h, { failFast: true });
    expect(res.fatal?.message).toMatch(/guest memory file missing/);
    expect(r.errors).toEqual([]);
  });

  it('a vmcore that is not a dump ends its loop with the error, without retrying', async () => {
    const f = join(dir, 'not-a-core');
    writeFileSync(f, Buffer.alloc(128, 0x41)); // 128 bytes of 'A': long enough for a header, not ELF
    const r = recorder();
    const res = await runVm({ name: 'core', backend: 'vmcore', vmcore: f, intervalMs: 1000 }, r.h, {});
    expect(res.fatal?.message).toMatch(/not an ELF file/);
    expect(res.errors).toBe(1);
  });

  it('the xen backend fails with a clear message on a host without /dev/xen/privcmd', async () => {
    const r = recorder();
    const res = await runVm({ name: 'dom', backend: 'xen', domid: 7, kernel: '6.1.0-56-amd64', intervalMs: 1000 }, r.h, { failFast: true });
    expect(res.fatal?.message).toMatch(/privcmd/);
  });

  it('several VMs: abort ends every loop; a failing VM does not end the others', async () => {
    const r = recorder();
    const ac = new AbortController();
    const f = join(dir, 'bad-core');
    writeFileSync(f, '\x7fELF');
    const p = runVms([missingQemu('a'), missingQemu('b'), { name: 'c', backend: 'vmcore', vmcore: f, intervalMs: 1000 }], r.h, {
      signal: ac.signal,
      retryMinMs: 10,
      retryMaxMs: 10,
    });
    await new Promise((res) => setTimeout(res, 300));
    // c ended (fatal), a and b are still being retried
    const before = r.errors.length;
    await new Promise((res) => setTimeout(res, 100));
    expect(r.errors.length).toBeGreaterThan(before);
    ac.abort();
    const results = await p;
    expect(results.map((x) => x.vm)).toEqual(['a', 'b', 'c']);
    expect(results[2].fatal).toBeDefined();
    expect(results[0].errors).toBeGreaterThan(3);
    expect(results[1].errors).toBeGreaterThan(3);
    expect(new Set(r.errors.map((e) => e.vm))).toEqual(new Set(['a', 'b']));
  });

  it('refuses two VMs with one name', async () => {
    await expect(runVms([missingQemu('x'), missingQemu('x')], recorder().h)).rejects.toThrow(/two VMs are named "x"/);
  });

  it('parses --prometheus [HOST:]PORT, loopback by default', () => {
    expect(parseListen('9464')).toEqual({ host: '127.0.0.1', port: 9464 });
    expect(parseListen('0')).toEqual({ host: '127.0.0.1', port: 0 });
    expect(parseListen('0.0.0.0:9100')).toEqual({ host: '0.0.0.0', port: 9100 });
    expect(parseListen('[::1]:9464')).toEqual({ host: '::1', port: 9464 });
    expect(parseListen('localhost:80')).toEqual({ host: 'localhost', port: 80 });
    for (const bad of ['', 'x', '9464:', '1.2.3.4:', '70000', '::1:9464', 'a:b']) expect(() => parseListen(bad), bad).toThrow(/\[HOST:\]PORT/);
  });
});
