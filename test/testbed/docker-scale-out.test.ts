// Scale-out the paper's way (sec. 4.4) on the real Docker guest: a clone of the template whose disk is
// edited offline before it boots — hostconfig.json restart policies so only the hot service (web) starts,
// its own address in a systemd-networkd .network file, a systemd drop-in — boots with only web running,
// serving HTTP at the new address (QEMU forwards the host port to that address only).
//
// Then warm start: that clone is saved as a warm image (memory + its disk, frozen) and a new VM is restored
// from it with another address and MAC; then that VM is powered off and booted again on its own overlay
// (the pooled-stopped way).
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemdDropIn } from '../../provisioners/disk-edit.ts';
import { run } from '../../testbed/guest-images.ts';
import { answers, bootAgain, waitServing, type DockerGuest } from '../../testbed/docker-guest/boot.ts';
import { cloneAndBoot, type DockerClone } from '../../testbed/docker-guest/clone.ts';
import { runningByScope } from '../../testbed/docker-guest/truth.ts';
import { saveWarmImage, WarmImageMismatchError, warmStart, type WarmDockerImage, type WarmStarted } from '../../testbed/docker-guest/warm.ts';

const ADDRESS = '10.0.2.16/24';
let clone: DockerClone;
let servingMs = 0;

beforeAll(async () => {
  clone = await cloneAndBoot({
    name: `dscale-${process.pid}`,
    keep: ['web'],
    address: ADDRESS,
    files: [systemdDropIn('docker.service', 'ciel-role', '[Service]\nEnvironment=CIEL_ROLE=web-replica\n')],
  });
  servingMs = await waitServing(clone.guest, ['web'], 420_000);
  process.stderr.write(`[docker scale-out] clone + boot to web serving HTTP: ${((servingMs + clone.guest.t0 - clone.t0) / 1000).toFixed(1)} s\n`);
}, 1_200_000);

afterAll(async () => {
  await clone?.stop();
});

/** Docker id → service name (the template's containers; a clone keeps them) */
const idToName = () => Object.fromEntries(Object.entries(clone.template.ids).map(([n, id]) => [id, n]));

/** What web's CGI computes for n iterations (the same arithmetic, on the host). */
function expectedWork(n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s = (s * 31 + i) % 1000003;
  return s;
}

describe('scale-out clone of the real Docker guest', () => {
  it('the offline edit left only web with a restart policy', () => {
    expect(clone.policies.map((p) => [p.name, p.from, p.to]).sort()).toEqual([
      ['batch', 'always', 'no'],
      ['db', 'always', 'no'],
      ['web', 'always', 'always'],
    ]);
  });

  // What runs is read from the kernel (a running container has a docker-<id>.scope cgroup) and from
  // Docker's own state files, not through `docker ps`: right after boot dockerd's API can stay silent for
  // minutes under TCG on a loaded host (a full-suite run saw two `docker ps` take over 400 s while web,
  // started by that same dockerd, already served), and how fast dockerd answers is not the point here.
  it('only web runs; db and batch exist but were not started', { timeout: 300_000 }, async () => {
    const ids = clone.template.ids;
    expect(await runningByScope(clone.guest, idToName())).toEqual(['web']);
    const states = await clone.guest.must(
      Object.entries(ids).map(([n, id]) => `echo "${n} $(grep -o '"Running":[a-z]*' /var/lib/docker/containers/${id}/config.v2.json)"`).join('; '),
      120_000,
    );
    expect(states.trim().split('\n').sort()).toEqual(['batch "Running":false', 'db "Running":false', 'web "Running":true']);
    expect(await answers(clone.guest, 'db')).toBe(false);
  });

  it('the VM has the address and the drop-in its disk was given', async () => {
    const addr = await clone.guest.must(`ip -4 -o addr show dev eth0`);
    expect(addr).toContain(`inet ${ADDRESS} `);
    expect(addr).not.toContain('10.0.2.15');
    const env = await clone.guest.must(`systemctl show docker -p Environment`);
    expect(env.trim()).toBe('Environment=CIEL_ROLE=web-replica');
  });

  it('web serves its CPU-bound requests at the new address', async () => {
    for (const n of [1000, 5000]) {
      const r = await fetch(`http://127.0.0.1:${clone.guest.ports.web}/cgi-bin/work?${n}`, { signal: AbortSignal.timeout(60_000) });
      expect(r.status).toBe(200);
      expect(await r.text()).toBe(`work ${n} ${expectedWork(n)}\n`);
    }
  }, 180_000);
});

describe('warm start of the real Docker guest from a saved minimal clone', () => {
  const NEW_ADDRESS = '10.0.2.17/24';
  const NEW_MAC = '52:54:00:c1:77:17';
  const imageDir = mkdtempSync(join(tmpdir(), 'ciel-warm-'));
  let image: WarmDockerImage;
  let warm: WarmStarted | undefined;
  let rebooted: DockerGuest | undefined;
  let frozenBefore: { size: number; mtimeMs: number; sha: string };
  const fingerprint = (f: string) => ({ size: statSync(f).size, mtimeMs: statSync(f).mtimeMs, sha: createHash('sha256').update(readFileSync(f)).digest('hex') });
  const work = async (g: DockerGuest, n: number) => (await fetch(`http://127.0.0.1:${g.ports.web}/cgi-bin/work?${n}`, { signal: AbortSignal.timeout(60_000) })).text();

  beforeAll(async () => {
    image = await saveWarmImage(clone, imageDir, { log: (m) => process.stderr.write(`${m}\n`) });
    frozenBefore = fingerprint(image.frozenDisk);
    warm = await warmStart(image, { name: `dwarm-${process.pid}`, address: NEW_ADDRESS, mac: NEW_MAC, log: (m) => process.stderr.write(`${m}\n`) });
    process.stderr.write(`[docker warm start] ${JSON.stringify(warm.times)}\n`);
  }, 900_000);

  afterAll(async () => {
    await rebooted?.stop();
    await warm?.stop();
    rmSync(imageDir, { recursive: true, force: true });
  });

  it('refuses a restore onto another machine before any QEMU starts', async () => {
    const err = await warmStart(image, { name: `dwarm-bad-${process.pid}`, address: '10.0.2.18/24', mac: '52:54:00:c1:77:18', memMiB: image.machine.memMiB * 2 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WarmImageMismatchError);
    expect((err as WarmImageMismatchError).field).toBe('machine.memMiB');
    expect((err as WarmImageMismatchError).vm).toBe(`dwarm-bad-${process.pid}`);
    // nothing was started for it: no RAM file, no overlay
    expect(() => statSync(`/dev/shm/ciel-dwarm-bad-${process.pid}`)).toThrow();
  });

  it('eth0 has the new MAC and exactly the new address', async () => {
    const g = warm!.guest;
    expect((await g.must('cat /sys/class/net/eth0/address')).trim()).toBe(NEW_MAC);
    expect((await g.must(`ip -4 -o addr show dev eth0 | awk '{print $4}'`)).trim()).toBe(NEW_ADDRESS);
  });

  it("the guest's clock was set to the host's (it resumes where the image stopped it); Docker still runs", { timeout: 60_000 }, async () => {
    const guestS = Number((await warm!.guest.must('date +%s')).trim());
    expect(Math.abs(guestS - Date.now() / 1000)).toBeLessThan(5);
    // the jump of the wall clock leaves dockerd and containerd running
    expect((await warm!.guest.must('systemctl is-active docker containerd')).trim().split('\n')).toEqual(['active', 'active']);
  });

  it('web serves its CPU-bound requests at the new address; only web runs', { timeout: 300_000 }, async () => {
    for (const n of [1000, 5000]) expect(await work(warm!.guest, n)).toBe(`work ${n} ${expectedWork(n)}\n`);
    expect(await runningByScope(warm!.guest, idToName())).toEqual(['web']);
  });

  it("its disk is an overlay of the image's frozen disk, never the template", () => {
    const info = JSON.parse(run('qemu-img', ['info', '--output=json', '-U', warm!.overlay])) as { format: string; 'backing-filename': string };
    expect(info.format).toBe('qcow2');
    expect(info['backing-filename']).toBe(image.frozenDisk);
  });

  it('powered off, it boots again on its own overlay (pooled stopped) and web answers at the new address', { timeout: 600_000 }, async () => {
    expect(await warm!.guest.poweroff()).toBe(true);
    rebooted = await bootAgain(warm!.guest, (m) => process.stderr.write(`${m}\n`));
    await waitServing(rebooted, ['web'], 420_000);
    expect(await work(rebooted, 2000)).toBe(`work 2000 ${expectedWork(2000)}\n`);
    expect((await rebooted.must(`ip -4 -o addr show dev eth0 | awk '{print $4}'`)).trim()).toBe(NEW_ADDRESS);
  });

  it('the frozen disk was not written by the restored VM', () => {
    expect(fingerprint(image.frozenDisk)).toEqual(frozenBefore);
  });
});
