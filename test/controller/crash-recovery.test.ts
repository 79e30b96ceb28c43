// The controller survives its own crash: the scale path (fault-driver.ts: the SQLite state, reconcile on
// start, DurableReplicas over the real QEMU-direct pool booting the busybox test guest, the hook balancer
// writing a real file) is SIGKILLed at each step of a scale-out and a scale-in (CIEL_FAULT_AT), then
// restarted. After every restart: 0 orphan QEMU processes or files, 0 duplicate replicas, the balancer's
// entries exactly the serving replicas, maxReplicas never exceeded; live replicas are adopted (same pid),
// not started again. `ciel autoscale status --json` is checked against the same reality.
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AutoscaleStatus } from '../../controller/replica-status.ts';
import { ensureTestGuest } from '../../testbed/minimal-guest.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const dir = mkdtempSync(join(tmpdir(), 'ciel-crash-'));
const vmDir = join(dir, 'vms');
const lbFile = join(dir, 'lb.txt');
const config = join(dir, 'autoscale.json');
const env = { ...process.env, CIEL_CACHE: join(dir, 'cache') };
const MAX = 3;
const ADDRS = ['10.99.0.2/24', '10.99.0.3/24', '10.99.0.4/24'];

/** The fault driver, as the controller: exit status and signal, its JSON lines. */
async function controller(args: string[], faultAt?: string) {
  // node itself (not npx): the SIGKILL it sends itself is its own exit signal, not a wrapper's status
  const r = await execa(process.execPath, ['--import', 'tsx', 'test/controller/fault-driver.ts', config, ...args], {
    cwd: ROOT,
    reject: false,
    timeout: 150_000,
    env: { ...env, ...(faultAt ? { CIEL_FAULT_AT: faultAt } : {}) },
  });
  const lines = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  return { ...r, lines };
}

/** Every QEMU process whose QMP socket is in our folder: name → pid (read from /proc, independently). */
function qemus(): Map<string, number> {
  const m = new Map<string, number>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    let a: string[];
    try {
      a = readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    const q = a[a.indexOf('-qmp') + 1] ?? '';
    if (a.includes('-qmp') && q.startsWith(`unix:${vmDir}/`)) m.set(a[a.indexOf('-name') + 1]!, Number(e));
  }
  return m;
}

async function status(): Promise<AutoscaleStatus> {
  const r = await execa('npx', ['tsx', 'cli/main.ts', 'autoscale', 'status', '--config', config, '--json'], { cwd: ROOT, env });
  return JSON.parse(r.stdout) as AutoscaleStatus;
}

const lbEntries = () => (existsSync(lbFile) ? readFileSync(lbFile, 'utf8').split('\n').filter(Boolean).sort() : []);

/** The invariants after a restart; returns the status. */
async function check(serving: number, pooled: number): Promise<AutoscaleStatus> {
  const st = await status();
  const running = qemus();
  const names = st.replicas.map((r) => r.name);
  expect(new Set(names).size).toBe(names.length); // no duplicates
  // every recorded replica is serving or pooled, and runs; nothing runs that is not recorded
  expect(st.replicas.map((r) => r.state).sort()).toEqual([...Array(serving).fill('serving'), ...Array(pooled).fill('pooled')].sort());
  expect([...running.keys()].sort()).toEqual([...names].sort());
  expect(st.replicas.every((r) => r.running === true && r.pid === running.get(r.name))).toBe(true);
  expect(st.orphans).toEqual([]);
  // no file of a replica that is not recorded (disks, logs, sockets; RAM files in the private shm folder)
  const fileNames = readdirSync(vmDir).map((f) => f.replace(/\.(qcow2|serial\.log|qmp|ctl)$/, ''));
  expect([...new Set(fileNames)].filter((n) => !names.includes(n))).toEqual([]);
  const shm = `/dev/shm/ciel-${process.getuid!()}`;
  const ram = existsSync(shm) ? readdirSync(shm).filter((f) => f.startsWith(`ciel-${st.prefix}`)) : [];
  expect(ram.sort()).toEqual(names.map((n) => `ciel-${n}.ram`).sort());
  // the balancer holds exactly the serving replicas, each with its own address
  const srv = st.replicas.filter((r) => r.state === 'serving');
  expect(lbEntries()).toEqual(srv.map((r) => `web ${r.name} ${r.address}`).sort());
  expect(new Set(srv.map((r) => r.address)).size).toBe(srv.length);
  expect(srv.length + 1).toBeLessThanOrEqual(MAX);
  expect(st.pool).toEqual(st.replicas.filter((r) => r.state === 'pooled').map((r) => r.name));
  return st;
}

beforeAll(async () => {
  const g = await ensureTestGuest();
  const hook = join(dir, 'lb-hook');
  // an idempotent balancer: add of a present entry and remove of an absent one succeed
  writeFileSync(hook, `#!/bin/sh\nf='${lbFile}'\ntouch "$f"\nline="$2 $3 $4"\ngrep -vxF "$line" "$f" > "$f.tmp"\n[ "$1" = add ] && echo "$line" >> "$f.tmp"\nmv "$f.tmp" "$f"\n`);
  chmodSync(hook, 0o755);
  writeFileSync(
    config,
    JSON.stringify({
      vms: [{ name: 'origin', kernel: '6.1.0-56-amd64', qmp: join(dir, 'origin.qmp'), memory: join(dir, 'origin.ram'), pid: 1, vcpus: 1, memMiB: 256 }],
      policy: { policies: [{ resource: 'cpu', vmThreshold: 0.5, target: 0.5 }], maxReplicas: MAX },
      provisioner: { kind: 'qemu-direct', template: g.template, kernel: g.kernel, initrd: g.initrd, cmdline: `${g.cmdline('{container}')} ciel.ip={ip}`, vcpus: 1, memMiB: 128, dir: vmDir, addresses: ADDRS },
      balancer: { hook },
    }),
  );
}, 300_000);

afterAll(async () => {
  await controller(['destroy']).catch(() => {});
  for (const pid of qemus().values()) process.kill(pid, 'SIGKILL'); // only ours: QMP socket in our folder
  rmSync(dir, { recursive: true, force: true });
}, 120_000);

const killed = (r: { signal?: string | undefined; exitCode?: number | undefined; stderr: string }) => expect(r.signal, `exit ${r.exitCode}: ${r.stderr}`).toBe('SIGKILL');

describe('the controller killed at each step of a scale-out and a scale-in, then restarted', { timeout: 200_000 }, () => {
  let first = '';
  let firstPid = 0;

  it('after the clone: the half-made replica is rolled back (disk, QEMU, RAM file)', async () => {
    const r = await controller(['out', 'web', '2'], 'after_clone');
    killed(r);
    expect(readdirSync(vmDir).some((f) => f.endsWith('.qcow2'))).toBe(true); // the clone was made
    const re = await controller(['reconcile']);
    expect(re.exitCode, re.stderr).toBe(0);
    expect(re.lines.map((l) => l.reconcile)).toEqual([expect.stringMatching(/-web-1: rolled back \(cut short at cloned\)$/)]);
    await check(0, 0);
  });

  it('after the boot: the running replica is adopted and registered (same QEMU, not a second one)', async () => {
    const r = await controller(['out', 'web', '2'], 'after_boot');
    killed(r);
    const before = qemus();
    expect(before.size).toBe(1);
    [[first, firstPid]] = [...before] as [[string, number]];
    expect(first).toMatch(/-web-2$/); // names never reused: 1 was the rolled-back one
    expect(lbEntries()).toEqual([]);
    await controller(['reconcile']);
    const st = await check(1, 0);
    expect(st.replicas[0]).toMatchObject({ name: first, pid: firstPid, address: '10.99.0.2', state: 'serving' });
  });

  it('before registering: the second replica is finished; a third is never started (maxReplicas 3)', async () => {
    killed(await controller(['out', 'web', '3'], 'before_register'));
    await controller(['reconcile']);
    await check(2, 0);
    const more = await controller(['out', 'web', '5']);
    expect(more.exitCode, more.stderr).toBe(0);
    const st = await check(2, 0);
    expect(st.replicas.map((r) => r.address).sort()).toEqual(['10.99.0.2', '10.99.0.3']);
    expect(qemus().get(first)).toBe(firstPid);
  });

  it('during a drain (after the balancer removed it, before the release): pooled, not serving', async () => {
    killed(await controller(['in', 'web', '2'], 'during_drain'));
    await controller(['reconcile']);
    const st = await check(1, 1);
    // the pooled VM is paused (QEMU's own state: 't' stopped threads are not visible; ask the status instead)
    expect(st.pool).toHaveLength(1);
  });

  it('after registering (a pooled replica resumed): the hook ran, the state said registering: serving once', async () => {
    const pooled = (await status()).pool[0]!;
    killed(await controller(['out', 'web', '3'], 'after_register'));
    await controller(['reconcile']);
    const st = await check(2, 0);
    expect(st.replicas.map((r) => r.name)).toContain(pooled); // the pool was used, no new clone
  });

  it('before a drain: the drain is finished on restart', async () => {
    killed(await controller(['in', 'web', '2'], 'before_drain'));
    await controller(['reconcile']);
    await check(1, 1);
  });

  it('destroy: nothing left', async () => {
    await controller(['destroy']);
    await check(0, 0);
    expect(readdirSync(vmDir)).toEqual([]);
  });
});
