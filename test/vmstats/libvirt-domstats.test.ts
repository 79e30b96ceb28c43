// VM-level stats of a libvirt domain: `virsh domstats --raw` parsing (pure; the end-to-end reading
// through a real libvirtd is in test/provisioners/libvirt.test.ts).

import { describe, expect, it } from 'vitest';
import { parseDomstats } from '../../vmstats/libvirt-domstats.ts';

describe('libvirt domstats', () => {
  it('domstats --raw parsing', () => {
    const s = parseDomstats(
      `Domain: 'x'
  state.state=1
  cpu.time=6946450000
  balloon.current=262144
  balloon.maximum=262144
  balloon.rss=206152
  vcpu.current=2
  net.count=1
  net.0.rx.bytes=100
  net.0.tx.bytes=50
  block.count=2
  block.0.rd.bytes=512
  block.0.wr.bytes=4096
  block.1.rd.bytes=1000
  block.1.wr.bytes=0
`,
      'x',
      '2026-11-22T09:00:00.000Z',
    );
    expect(s).toEqual({
      time: '2026-11-22T09:00:00.000Z',
      vm: 'x',
      vcpus: 2,
      cpu_time_ns: 6946450000,
      memory_used_bytes: 206152 * 1024,
      memory_total_bytes: 262144 * 1024,
      block_rd_bytes: 1512,
      block_wr_bytes: 4096,
      net_rx_bytes: 100,
      net_tx_bytes: 50,
    });
    // guest-reported balloon stats win over the host RSS
    expect(parseDomstats('balloon.current=1000\nballoon.available=900\nballoon.unused=400\nballoon.rss=999\n', 'x', 't').memory_used_bytes).toBe(500 * 1024);
  });
});
