// controller/vm-level-source.ts: a libvirt VM of the config is read with `virsh -c URI domstats DOMAIN`
// and reported under its configured name; a VM the config does not name is a VmError. `virsh` here is
// a script on PATH that records its arguments and prints fixed domstats (no libvirt needed).
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { VmError } from '../../common/errors.ts';
import type { AutoscaleVm } from '../../controller/config.ts';
import { vmLevelSource } from '../../controller/vm-level-source.ts';

const dir = mkdtempSync(join(tmpdir(), 'ciel-vm-level-'));
const PATH = process.env.PATH;
afterAll(() => {
  process.env.PATH = PATH;
  rmSync(dir, { recursive: true, force: true });
});

describe('vmLevelSource', () => {
  it('libvirt: domstats of the domain through the configured URI, under the configured name', async () => {
    writeFileSync(
      join(dir, 'virsh'),
      `#!/bin/sh\necho "$@" > ${dir}/args\nprintf 'Domain: db\\n  cpu.time=5000000000\\n  balloon.current=524288\\n  balloon.available=500000\\n  balloon.unused=300000\\n  vcpu.current=2\\n  block.count=1\\n  block.0.rd.bytes=4096\\n  block.0.wr.bytes=8192\\n  net.count=1\\n  net.0.rx.bytes=100\\n  net.0.tx.bytes=200\\n'\n`,
    );
    chmodSync(join(dir, 'virsh'), 0o755);
    process.env.PATH = `${dir}:${PATH}`;
    const vm: AutoscaleVm = { name: 'db-vm', kernel: '6.1.0-56-amd64', qmp: '/q', memory: '/m', names: {}, stats: { kind: 'libvirt', domain: 'db', uri: 'qemu:///session' } };
    const s = await vmLevelSource([vm]).vmStats('db-vm');
    expect(readFileSync(join(dir, 'args'), 'utf8').trim()).toBe('-c qemu:///session domstats --raw --cpu-total --balloon --vcpu --block --interface db');
    expect(s).toMatchObject({
      vm: 'db-vm',
      vcpus: 2,
      cpu_time_ns: 5e9,
      memory_used_bytes: 200000 * 1024,
      memory_total_bytes: 524288 * 1024,
      block_rd_bytes: 4096,
      block_wr_bytes: 8192,
      net_rx_bytes: 100,
      net_tx_bytes: 200,
    });
    await expect(vmLevelSource([vm]).vmStats('other')).rejects.toBeInstanceOf(VmError);
  });
});
