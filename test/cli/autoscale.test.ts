// `ciel autoscale` as a user runs it, end to end on the real test guest, in a dry run: the origin is booted
// as in the scale-out e2e test (bare test guest, 2 vCPUs, 512 MiB, web/db/batch services), the command runs
// as a child process (`npx tsx cli/main.ts autoscale --dry-run --json`), web's load rises, and the command
// decides to scale out web, and only web. QEMU's QMP socket takes one client at a time: while the command
// runs, this test talks to the guest only through its ground-truth channel (ttyS1), never QMP.
//
// The stop signal goes to the `ciel` process itself (as `kill -INT PID` would): npx runs it under
// `npm exec` → `sh -c tsx` → `node tsx` → node, and neither npm nor sh passes a SIGINT down (sent to npx
// it is lost; sent to the whole group, as a terminal's Ctrl-C, npm and sh die of it themselves, so the
// command's own exit status never arrives). Its exit status does come back through the wrappers.
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasBuild } from '../../common/build-artifact.ts';
import { buildMonitor } from '../../compiler/build.ts';
import type { AutoscaleStatus } from '../../controller/replica-status.ts';
import { stateLocation } from '../../controller/state-store.ts';
import type { ControllerEvent, DecisionEvent } from '../../controller/types.ts';
import { ensureTestGuest } from '../../testbed/minimal-guest.ts';
import { demoPolicy, ORIGIN_MEM_MIB, ORIGIN_VCPUS, RELEASE } from '../../testbed/scenario.ts';
import { serviceNames, setLoad, startServices } from '../../testbed/services.ts';
import { bootGuest, type Guest } from '../../testbed/guest/boot.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const verbose = process.env.CIEL_E2E_VERBOSE === '1';
const log = verbose ? (l: string) => process.stderr.write(`[autoscale] ${l}\n`) : () => {};

/** The `ciel` node process under `pid`: the innermost one along the single-child chain whose command line
 *  runs cli/main.ts (npm exec → sh → node tsx → node). Its own children (the pause guardian, a `node -e`
 *  the command starts) are not it: a SIGINT sent there would never reach the command. */
function cielPid(pid: number): number {
  let found = pid;
  for (;;) {
    let kids: number[] = [];
    try {
      kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    } catch {
      return found;
    }
    if (kids.length !== 1) return found;
    pid = kids[0]!;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('cli/main.ts')) found = pid;
    } catch {
      return found;
    }
  }
}

let g: Guest | undefined;
const dir = mkdtempSync(join(tmpdir(), 'ciel-autoscale-'));

beforeAll(async () => {
  if (!hasBuild(RELEASE)) await buildMonitor({ release: RELEASE });
  g = await bootGuest({ name: `autoscale-${process.pid}`, bare: true, memMiB: ORIGIN_MEM_MIB, smp: ORIGIN_VCPUS, log });
  await startServices(g);
}, 240_000);

afterAll(async () => {
  await g?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('ciel autoscale --dry-run on the real test guest', () => {
  it('decides to scale out web 1 → 2 (and nothing else), stops on SIGINT with status 0, leaves the guest running', { timeout: 90_000 }, async () => {
    const guest = g!;
    const config = join(dir, 'autoscale.json');
    writeFileSync(
      config,
      JSON.stringify({
        vms: [
          {
            name: 'origin',
            kernel: RELEASE,
            qmp: guest.qmpSocket,
            memory: guest.memFile,
            pid: guest.pid,
            vcpus: ORIGIN_VCPUS,
            memMiB: ORIGIN_MEM_MIB,
            names: Object.fromEntries(serviceNames()),
          },
        ],
        policy: demoPolicy(),
        // a provisioner with an address list, so the replica's spec is made (and its address told) as
        // for real; --dry-run starts nothing
        provisioner: {
          kind: 'qemu-direct',
          template: join(dir, 'never-used.qcow2'),
          kernel: join(dir, 'vmlinuz'),
          initrd: join(dir, 'initrd'),
          cmdline: 'console=ttyS0 ciel.container={container} ciel.ip={ip}',
          vcpus: 1,
          memMiB: 256,
          addresses: ['10.77.0.30/24', '10.77.0.31/24'],
        },
      }),
    );
    const proc = execa('npx', ['tsx', 'cli/main.ts', 'autoscale', '--config', config, '--dry-run', '--json', '--interval', '200ms', '--prometheus', '127.0.0.1:0'], { cwd: ROOT, reject: false });
    const events: ControllerEvent[] = [];
    let rest = '';
    let stderr = '';
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
      const parts = (rest + d).split('\n');
      rest = parts.pop()!;
      for (const l of parts) if (l.trim()) events.push(JSON.parse(l) as ControllerEvent);
    });
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      if (verbose) process.stderr.write(d);
    });
    let exited = false;
    void proc.finally(() => (exited = true));
    const until = async <T>(f: () => T | undefined, ms: number, what: string): Promise<T> => {
      const end = Date.now() + ms;
      for (;;) {
        const v = f();
        if (v !== undefined) return v;
        if (exited || Date.now() > end)
          throw new Error(`${exited ? 'ciel autoscale exited' : `timed out after ${ms} ms`} waiting for ${what}; stderr:\n${stderr}\nlast events:\n${events.slice(-8).map((e) => JSON.stringify(e)).join('\n')}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    try {
      // attached and checking: a few VM-level intervals (the kept baseline is primed meanwhile)
      await until(() => (events.filter((e) => e.type === 'vm_check').length >= 5 ? true : undefined), 30_000, 'five vm_check events');
      await setLoad(guest, 'web', 1.4);
      const decision = await until(
        () => events.find((e): e is DecisionEvent => e.type === 'decision' && e.action === 'scale_out' && e.container === 'web'),
        30_000,
        'the scale_out decision for web',
      );
      expect(decision).toMatchObject({ type: 'decision', action: 'scale_out', vm: 'origin', container: 'web', from: 1, to: 2 });
      // the dry-run "replica" follows the decision, and says so
      const out = await until(() => events.find((e) => e.type === 'scaled_out' && e.container === 'web'), 5_000, 'the dry-run scaled_out');
      expect(out).toMatchObject({ replica: 'ciel-web-1', dry_run: true });
      // a few more intervals: still nothing for db or batch
      await new Promise((r) => setTimeout(r, 1_000));
      expect(events.filter((e) => e.type === 'decision' && e.container !== 'web')).toEqual([]);
      expect(events.filter((e) => e.type === 'decision').map((e) => (e as DecisionEvent).container)).toEqual(['web']);
      // the sample that led to it came through the monitor, with the service names of the config
      expect(events.some((e) => e.type === 'containers_sampled' && e.util.web !== undefined && e.util.db !== undefined)).toBe(true);
      // --prometheus: the controller's samples are served on /metrics, one series per service of the VM
      const url = /metrics at (http:\S+)/.exec(stderr)?.[1];
      expect(url, stderr).toBeDefined();
      const text = await (await fetch(url!)).text();
      const exported = [...text.matchAll(/^container_memory_usage_bytes\{([^}]*)\} (\d+)$/gm)].map((m) => ({ labels: m[1]!, bytes: Number(m[2]) }));
      const names = exported.filter((x) => x.labels.includes('vm="origin"')).map((x) => /name="([^"]*)"/.exec(x.labels)?.[1]).sort();
      expect(names).toEqual([...new Set(serviceNames().values())].sort());
      expect(exported.every((x) => x.bytes > 0)).toBe(true);
      expect(text).toMatch(/^ciel_sample_errors_total\{vm="origin"\} 0$/m);
    } finally {
      if (!exited) {
        const cli = cielPid(proc.pid!);
        process.kill(cli, 'SIGINT');
        // never hang the suite: what we started goes after 20 s
        setTimeout(() => {
          for (const pid of [cli, proc.pid!]) if (!exited) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
        }, 20_000).unref();
      }
    }
    const r = await proc;
    expect(r.exitCode, stderr).toBe(0);
    expect(stderr).toContain('SIGINT: stopping');
    expect(stderr).toContain('dry run: would have started ciel-web-1 (web, 10.77.0.30)');
    expect(guest.alive()).toBe(true);
  });

  it('a real run killed after booting a replica: the restart adopts it and finishes the scale-out, no second replica', { timeout: 240_000 }, async () => {
    const guest = g!;
    const tg = await ensureTestGuest();
    const vmDir = join(dir, 'vms');
    const lbFile = join(dir, 'lb.txt');
    const hook = join(dir, 'lb-hook');
    writeFileSync(hook, `#!/bin/sh\nf='${lbFile}'\ntouch "$f"\nline="$2 $3 $4"\ngrep -vxF "$line" "$f" > "$f.tmp"\n[ "$1" = add ] && echo "$line" >> "$f.tmp"\nmv "$f.tmp" "$f"\n`);
    chmodSync(hook, 0o755);
    const config = join(dir, 'real.json');
    writeFileSync(
      config,
      JSON.stringify({
        vms: [{ name: 'origin', kernel: RELEASE, qmp: guest.qmpSocket, memory: guest.memFile, pid: guest.pid, vcpus: ORIGIN_VCPUS, memMiB: ORIGIN_MEM_MIB, names: Object.fromEntries(serviceNames()) }],
        // maxReplicas 2: web and one replica. What is under test is the crash, not the choice: the trend rule is
        // kept out (trendMinShare 0.95), since 200 ms windows on a loaded TCG host sometimes starve web and
        // let it pick batch in its 30 % phase, which would boot a second, unrelated replica.
        policy: { ...demoPolicy(), trendMinShare: 0.95 },
        provisioner: { kind: 'qemu-direct', template: tg.template, kernel: tg.kernel, initrd: tg.initrd, cmdline: `${tg.cmdline('{container}')} ciel.ip={ip}`, vcpus: 1, memMiB: 128, dir: vmDir, addresses: ['10.77.0.40/24', '10.77.0.41/24'] },
        balancer: { hook },
      }),
    );
    const stateFile = stateLocation(config).file;
    const cli = (args: string[], env: Record<string, string> = {}) =>
      execa(process.execPath, ['--import', 'tsx', 'cli/main.ts', 'autoscale', '--config', config, ...args], { cwd: ROOT, reject: false, timeout: 180_000, env: { ...process.env, ...env } });
    const status = async () => JSON.parse((await cli(['status', '--json'])).stdout) as AutoscaleStatus;
    const lb = () => (existsSync(lbFile) ? readFileSync(lbFile, 'utf8').split('\n').filter(Boolean) : []);
    try {
      await setLoad(guest, 'web', 1.4);
      // the controller decides web 1 → 2, boots the replica, and dies right after the boot
      const crashed = await cli(['--json', '--interval', '200ms'], { CIEL_FAULT_AT: 'after_boot' });
      expect(crashed.signal, crashed.stderr).toBe('SIGKILL');
      const st1 = await status();
      expect(st1.replicas).toMatchObject([{ service: 'web', origin: 'origin', state: 'booted', address: '10.77.0.40', running: true }]);
      expect(lb()).toEqual([]);
      const { name, pid } = st1.replicas[0]!;
      expect(name).toBe(`${st1.prefix}-web-1`);
      // the restart: reconciles, then runs 10 intervals with web still hot; maxReplicas 2 is already reached
      const again = await cli(['--json', '--interval', '200ms', '--count', '10']);
      expect(again.exitCode, again.stderr).toBe(0);
      expect(again.stderr).toContain(`reconcile: ${name}: scale-out finished (was booted): registered with the balancer`);
      const evs = again.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as ControllerEvent);
      expect(evs.filter((e) => e.type === 'scaled_out' || (e.type === 'decision' && e.action === 'scale_out'))).toEqual([]);
      const st2 = await status();
      expect(st2.replicas).toMatchObject([{ name, state: 'serving', running: true, pid }]);
      expect(st2.balancer).toEqual([{ service: 'web', vm: name, address: '10.77.0.40', certain: true }]);
      expect(lb()).toEqual([`web ${name} 10.77.0.40`]);
      // --destroy-on-exit: unregistered and destroyed, the state forgets it
      const end = await cli(['--interval', '200ms', '--count', '1', '--destroy-on-exit']);
      expect(end.exitCode, end.stderr).toBe(0);
      expect((await status()).replicas).toEqual([]);
      expect(lb()).toEqual([]);
      expect(readdirSync(vmDir)).toEqual([]);
    } finally {
      await setLoad(guest, 'web', 0.05).catch(() => {});
      await cli(['--interval', '200ms', '--count', '1', '--destroy-on-exit']).catch(() => {});
      rmSync(stateFile, { force: true });
      rmSync(`${stateFile}-wal`, { force: true });
      rmSync(`${stateFile}-shm`, { force: true });
    }
  });
});
