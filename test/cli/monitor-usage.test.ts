// `ciel monitor` refuses what cannot work before it attaches to anything, with one line naming the
// option and the reason -- never a Node stack trace, never a silent no-op. No guest needed: each case
// fails (or warns) before the first attach.
import { execa } from 'execa';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
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

  it('a guest kernel Debian does not carry: the error names the release found and what to do', async () => {
    // guest RAM as the kernel leaves it (VMCOREINFO with the page-table root), of a self-built kernel
    const dir = mkdtempSync(join(tmpdir(), 'ciel-custom-kernel-'));
    try {
      const ram = Buffer.alloc(4 << 20);
      ram.write('OSRELEASE=6.6.6-custom\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff82a0a000\nNUMBER(phys_base)=0\nKERNELOFFSET=0\n\0', 0x23000, 'latin1');
      writeFileSync(join(dir, 'ram'), ram);
      const r = await execa(process.execPath, [CIEL, 'monitor', '--memory', join(dir, 'ram'), '--count', '1'], {
        reject: false,
        timeout: 60_000,
        env: { CIEL_GENERATED: join(dir, 'generated') },
      });
      expect(r.exitCode).toBe(1);
      const lines = r.stderr.trim().split('\n');
      expect(lines[0]).toBe(`ciel monitor: no monitor build for kernel 6.6.6-custom yet: building it once (Debian's packages, cached; output ${join(dir, 'generated', '6.6.6-custom')})`);
      expect(lines.at(-1)).toMatch(
        /^ciel: the guest runs kernel 6\.6\.6-custom \(read from its memory\), and no monitor can be built for it from Debian's packages: --kernel: '6\.6\.6-custom' is not a Debian kernel release string; .*\. For a kernel Debian does not carry, build from that kernel's own build tree \(`ciel build --kernel-dir DIR --system-map FILE`: the build is named after the tree's release, which must be 6\.6\.6-custom\); `ciel build --help` lists the releases and flavours it can fetch$/,
      );
      noStack(r.stderr);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
