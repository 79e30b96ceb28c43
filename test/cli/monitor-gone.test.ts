// `ciel monitor --qemu ... --memory ...` (one VM on the command line) ends with exit 1 and says QEMU is
// gone when the VM's QEMU exits: nobody will bring that QEMU back under the same socket, so retrying
// forever would hang a script. (A --config daemon keeps retrying: test/vmi/live/lifecycle.test.ts.)
import { execa } from 'execa';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { hasBuild } from '../../common/build-artifact.ts';
import { buildMonitor } from '../../compiler/build.ts';
import { bootGuest, type Guest } from '../../testbed/guest/boot.ts';

const RELEASE = '6.1.0-56-amd64';
const CIEL = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'ciel.mjs');
let guest: Guest;

beforeAll(async () => {
  if (!hasBuild(RELEASE)) await buildMonitor({ release: RELEASE });
  guest = await bootGuest({ name: `gone-${process.pid}` });
}, 600_000);
afterAll(async () => guest?.stop());

it('exits 1 with "QEMU is gone" when the QEMU of the one VM it watches exits', async () => {
  const proc = execa(process.execPath, [CIEL, 'monitor', '--qemu', guest.qmpSocket, '--memory', guest.memFile, '--kernel', RELEASE, '--json', '--interval', '100ms'], {
    reject: false,
  });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const t0 = Date.now();
  while (!out.includes('"containers"')) {
    if (Date.now() - t0 > 60_000) throw new Error('no sample within 60 s');
    await new Promise((r) => setTimeout(r, 100));
  }
  process.kill(guest.pid, 'SIGTERM');
  const killedAt = Date.now();
  const r = await Promise.race([proc, new Promise<'hang'>((res) => setTimeout(() => res('hang'), 30_000))]);
  if (r === 'hang') proc.kill('SIGKILL');
  expect(r).not.toBe('hang');
  if (r === 'hang') return;
  expect(r.exitCode).toBe(1);
  expect(r.stderr.trim().split('\n').pop()).toMatch(/^ciel: .*QEMU is (gone|shutting the guest down)/);
  expect(r.stderr).not.toMatch(/^\s+at /m);
  console.log(`exit ${r.exitCode} ${Date.now() - killedAt} ms after QEMU got SIGTERM: ${r.stderr.trim().split('\n').pop()}`);
}, 120_000);
