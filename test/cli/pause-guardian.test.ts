// `ciel monitor --consistent` pauses the vCPUs around each sample, `ciel autoscale` around each container
// sample of a hot VM. Whatever instant the process dies at
// (SIGKILL, as the OOM killer would), the VM must be left in the run state it had: the pause guardian
// (vmi/pause-guardian.ts) resumes it. And a VM an operator paused is sampled as it is, never resumed.
import { execa } from 'execa';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { hasBuild } from '../../common/build-artifact.ts';
import { buildMonitor } from '../../compiler/build.ts';
import { bootGuest, type Guest } from '../../testbed/guest/boot.ts';
import { QmpClient } from '../../vmi/qmp.ts';

const RELEASE = '6.1.0-56-amd64';
const CIEL = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'ciel.mjs');
const KILLS = Number(process.env.CIEL_PAUSE_KILLS ?? 30);
let guest: Guest;

beforeAll(async () => {
  if (!hasBuild(RELEASE)) await buildMonitor({ release: RELEASE });
  guest = await bootGuest({ name: `pause-${process.pid}` });
}, 600_000);
afterAll(async () => guest?.stop());

/** QEMU's run state, asked on a short connection of our own (QMP takes one client at a time). */
async function runState(): Promise<string> {
  const q = await QmpClient.connect(guest.qmpSocket, 10_000);
  try {
    return (await q.queryStatus()).status;
  } finally {
    q.close();
  }
}

async function qmp(cmd: 'stop' | 'cont'): Promise<void> {
  const q = await QmpClient.connect(guest.qmpSocket, 10_000);
  try {
    await q.execute(cmd);
  } finally {
    q.close();
  }
}

const monitorArgs = (extra: string[]) => [CIEL, 'monitor', '--qemu', guest.qmpSocket, '--memory', guest.memFile, '--kernel', RELEASE, '--consistent', '--json', ...extra];

it('a VM an operator paused is sampled as it is and stays paused', async () => {
  await qmp('stop');
  try {
    const r = await execa(process.execPath, monitorArgs(['--count', '3', '--interval', '50ms']), { timeout: 60_000 });
    const samples = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { pause_us: number; containers: unknown[] });
    expect(samples.length).toBe(3);
    for (const s of samples) {
      expect(s.containers.length).toBe(6);
      expect(s.pause_us).toBe(0); // not ours to pause
    }
    expect(await runState()).toBe('paused');
  } finally {
    await qmp('cont');
  }
  expect(await runState()).toBe('running');
}, 120_000);

/** Start `args`, wait until its output shows it is sampling, kill it at a random instant; n times. */
async function killLoop(what: string, args: () => string[], sampling: string): Promise<void> {
  let insidePause = 0;
  let leftPaused = 0;
  for (let i = 0; i < KILLS; i++) {
    const proc = execa(process.execPath, args(), { reject: false });
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const t0 = Date.now();
    while (!out.includes(sampling) && Date.now() - t0 < 60_000) await new Promise((r) => setTimeout(r, 5));
    expect(out).toContain(sampling);
    await new Promise((r) => setTimeout(r, Math.random() * 40));
    proc.kill('SIGKILL');
    const r = await proc; // resolves once the guardian, which shares stderr, has finished too
    if (/ciel pause guardian: resumed/.test(r.stderr)) insidePause++;
    expect(r.stderr).not.toMatch(/could NOT resume/);
    const state = await runState();
    if (state !== 'running') leftPaused++;
  }
  console.log(`${what}: ${KILLS} kills, ${insidePause} inside a pause and resumed by the guardian, ${leftPaused} left the VM paused`);
  expect(leftPaused).toBe(0);
  expect(insidePause).toBeGreaterThan(0); // the kills did hit the pause window: the guardian was exercised
}

it(`ciel monitor --consistent killed at ${KILLS} random instants: the VM is running every time`, async () => {
  await killLoop('ciel monitor --consistent', () => monitorArgs(['--interval', '10ms']), '"pause_us"');
}, 900_000);

it(`ciel autoscale killed at ${KILLS} random instants while its VM is hot: the VM is running every time`, async () => {
  const config = join(guest.runDir, 'autoscale.json');
  writeFileSync(
    config,
    JSON.stringify({
      vms: [{ name: 'origin', kernel: RELEASE, qmp: guest.qmpSocket, memory: guest.memFile, pid: guest.pid, vcpus: 2, memMiB: 512 }],
      // a threshold the guest's own burner container keeps crossing: every interval is hot, so every
      // interval samples the containers with the VM paused
      policy: { policies: [{ resource: 'cpu', vmThreshold: 0.01, target: 0.5 }] },
    }),
  );
  await killLoop('ciel autoscale', () => [CIEL, 'autoscale', '--config', config, '--dry-run', '--json', '--interval', '20ms'], '"vm_hot"');
}, 900_000);
