// `ciel monitor` refuses what cannot work before it attaches to anything, with one line naming the
// option and the reason -- never a Node stack trace, never a silent no-op. No guest needed: each case
// fails (or warns) before the first attach.
import { execa } from 'execa';
import { createServer, type Server } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const CIEL = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'ciel.mjs');
const TARGET = ['monitor', '--qemu', '/nonexistent/qmp.sock', '--memory', '/nonexistent/ram', '--kernel', '6.1.0-56-amd64'];
const run = (args: string[]) => execa(process.execPath, [CIEL, ...args], { reject: false, timeout: 60_000 });
const noStack = (stderr: string) => expect(stderr).not.toMatch(/^\s+at /m);

let busy: Server;
let busyPort: number;
beforeAll(async () => {
  busy = createServer();
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
  busyPort = (busy.address() as { port: number }).port;
});
afterAll(() => busy.close());

describe('ciel monitor: bad options end with one clear line', () => {
  it('--prometheus on a port in use', async () => {
    const r = await run([...TARGET, '--prometheus', `127.0.0.1:${busyPort}`]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr.trim()).toBe(`ciel: cannot serve metrics on 127.0.0.1:${busyPort}: the port is in use (another exporter, or a second ciel on it?)`);
    noStack(r.stderr);
  });

  it('--prometheus on an address that is not this machine\'s, and on a host name that does not resolve', async () => {
    const foreign = await run([...TARGET, '--prometheus', '192.0.2.1:9464']); // TEST-NET-1: never local; binding sends nothing
    expect(foreign.exitCode).toBe(1);
    expect(foreign.stderr.trim()).toBe("ciel: cannot serve metrics on 192.0.2.1:9464: that address is not one of this machine's");
    const unknown = await run([...TARGET, '--prometheus', 'no-such-host.invalid:9464']);
    expect(unknown.exitCode).toBe(1);
    expect(unknown.stderr.trim()).toMatch(/^ciel: cannot serve metrics on no-such-host\.invalid:9464: (unknown host name|the host name could not be resolved)$/);
    noStack(foreign.stderr + unknown.stderr);
  });

  it('--prometheus on every interface is served, with a warning', async () => {
    const r = await run([...TARGET, '--prometheus', '0.0.0.0:0', '--count', '1']);
    expect(r.stderr).toMatch(/metrics at http:\/\/0\.0\.0\.0:\d+\/metrics \(WARNING: every interface: anyone who reaches this host can read/);
  });

  it('--quiet without --prometheus would print nothing at all', async () => {
    const r = await run([...TARGET, '--quiet']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr.trim()).toBe('ciel: --quiet prints nothing: it only makes sense with --prometheus');
  });

  it('--disk naming a missing file', async () => {
    const r = await run([...TARGET, '--disk', '/nonexistent/disk.qcow2']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr.trim()).toBe('ciel: --disk: no such file: /nonexistent/disk.qcow2');
  });

  it('--interval below the configs\' 10 ms minimum', async () => {
    const r = await run([...TARGET, '--interval', '5ms']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr.trim()).toBe("ciel: interval '5ms' is shorter than 10 ms (the configs' minimum, 0.01 s)");
  });

  it('--kernel that is a path, not a release name, is refused before anything is opened', async () => {
    const r = await run(['monitor', '--qemu', '/nonexistent/qmp.sock', '--memory', '/nonexistent/ram', '--kernel', '../../etc']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr.trim()).toBe('ciel: --kernel: "../../etc" is not a kernel release name (like 6.1.0-56-amd64: what `uname -r` prints in the guest)');
    const vmcore = await run(['monitor', '--vmcore', '/nonexistent/core', '--kernel', '6.1.0-56-amd64/../../x']);
    expect(vmcore.exitCode).toBe(1);
    expect(vmcore.stderr.trim()).toBe('ciel: --kernel: "6.1.0-56-amd64/../../x" is not a kernel release name (like 6.1.0-56-amd64: what `uname -r` prints in the guest)');
    noStack(r.stderr + vmcore.stderr);
  });
});
