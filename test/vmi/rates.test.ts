import { describe, expect, it } from 'vitest';
import type { ContainerSample, Sample } from '../../vmi/sample.ts';
import { RateTracker, parseTimeNs } from '../../vmi/rates.ts';
import { containerSample } from '../fixtures/sample.ts';

const ID_A = 'a'.repeat(64);
const ID_B = 'b'.repeat(64);
const ID_C = 'c'.repeat(64);

const c = (id: string, v: Partial<ContainerSample> = {}): ContainerSample => containerSample(id, v);

function s(time: string, containers: ContainerSample[], vm = 'vm1'): Sample {
  return { time, kernel: '6.1.0-56-amd64', sample_us: 300, vm, containers };
}

describe('parseTimeNs', () => {
  it('keeps sub-millisecond digits and honours offsets', () => {
    expect(parseTimeNs('1970-01-01T00:00:01.000000001Z')).toBe(1_000_000_001n);
    expect(parseTimeNs('1970-01-01T00:00:01.5Z')).toBe(1_500_000_000n);
    expect(parseTimeNs('1970-01-01T02:00:00.250250+02:00')).toBe(250_250_000n);
    expect(parseTimeNs('2026-11-22T08:00:00Z') - parseTimeNs('2026-11-22T07:59:59.999999999Z')).toBe(1n);
    expect(() => parseTimeNs('yesterday')).toThrow(/bad sample time/);
  });
});

describe('RateTracker', () => {
  it('computes rates over the real, irregular elapsed time', () => {
    const t = new RateTracker();
    const r0 = t.update(
      s('2026-11-22T08:00:00.000Z', [c(ID_A, { cpu_usage_ns: 10_000_000_000, net_rx_bytes: 1000, memory_usage_bytes: 5 << 20 })]),
    );
    expect(r0.elapsedSeconds).toBeNull();
    expect(r0.appeared).toEqual([ID_A]);
    expect(r0.containers[0]).toMatchObject({ cpuPercent: null, diskReadBps: null, netRxBps: null, memoryBytes: 5 << 20 });

    // 1.5 s later: A used 1.5 s of CPU (one full CPU), read 3 MB, received 6144 B
    const r1 = t.update(
      s('2026-11-22T08:00:01.500Z', [
        c(ID_A, { cpu_usage_ns: 11_500_000_000, io_read_bytes: 3_000_000, net_rx_bytes: 7144, net_tx_bytes: 300 }),
        c(ID_B, { cpu_usage_ns: 42 }),
      ]),
    );
    expect(r1.elapsedSeconds).toBe(1.5);
    expect(r1.appeared).toEqual([ID_B]);
    expect(r1.disappeared).toEqual([]);
    const a1 = r1.containers.find((x) => x.id === ID_A)!;
    expect(a1.cpuPercent).toBe(100);
    expect(a1.diskReadBps).toBe(2_000_000);
    expect(a1.diskWriteBps).toBe(0);
    expect(a1.netRxBps).toBe(4096);
    expect(a1.netTxBps).toBe(200);
    expect(r1.containers.find((x) => x.id === ID_B)!.cpuPercent).toBeNull();

    // 0.25025 s later (sub-ms timestamp): A used 125.125 ms of CPU = 50 %; B is gone;
    // A's read counter went back (container restarted under the same id): no rate, not negative
    const r2 = t.update(
      s('2026-11-22T08:00:01.750250Z', [c(ID_A, { cpu_usage_ns: 11_625_125_000, io_read_bytes: 100, net_rx_bytes: 7144 })]),
    );
    expect(r2.elapsedSeconds).toBe(0.25025);
    expect(r2.disappeared).toEqual([ID_B]);
    const a2 = r2.containers[0];
    expect(a2.cpuPercent).toBe(50);
    expect(a2.diskReadBps).toBeNull();
    expect(a2.netRxBps).toBe(0);
    expect(a2.netTxBps).toBeNull(); // 300 -> 0

    // and the next step is measured from the post-reset value: 100 -> 1_101 B over 2 s
    const r3 = t.update(s('2026-11-22T08:00:03.750250Z', [c(ID_A, { cpu_usage_ns: 11_625_125_000, io_read_bytes: 1100 })]));
    expect(r3.containers[0].diskReadBps).toBe(500);
    expect(r3.containers[0].cpuPercent).toBe(0);
  });

  it('a late sample does not push CPU over 100 %', () => {
    const t = new RateTracker();
    t.update(s('2026-11-22T08:00:00Z', [c(ID_A, { cpu_usage_ns: 0 })]));
    // meant to be 1 s, arrived after 2.5 s; the container kept one CPU busy all along
    const r = t.update(s('2026-11-22T08:00:02.5Z', [c(ID_A, { cpu_usage_ns: 2_500_000_000 })]));
    expect(r.containers[0].cpuPercent).toBe(100);
    // two CPUs busy for 0.8 s
    const r2 = t.update(s('2026-11-22T08:00:03.3Z', [c(ID_A, { cpu_usage_ns: 4_100_000_000 })]));
    expect(r2.containers[0].cpuPercent).toBeCloseTo(200, 9);
  });

  it('guest reboot: every counter resets, no negative rate anywhere', () => {
    const t = new RateTracker();
    t.update(s('2026-11-22T08:00:00Z', [c(ID_A, { cpu_usage_ns: 9e9, io_read_bytes: 1e6, io_write_bytes: 1e6, net_rx_bytes: 1e6, net_tx_bytes: 1e6 })]));
    const r = t.update(s('2026-11-22T08:00:01Z', [c(ID_A, { cpu_usage_ns: 1e6, io_read_bytes: 10, io_write_bytes: 10, net_rx_bytes: 10, net_tx_bytes: 10 })]));
    expect(r.containers[0]).toMatchObject({ cpuPercent: null, diskReadBps: null, diskWriteBps: null, netRxBps: null, netTxBps: null });
  });

  it('a sample not later than the previous one gives no rates and becomes the baseline', () => {
    const t = new RateTracker();
    t.update(s('2026-11-22T08:00:05Z', [c(ID_A, { cpu_usage_ns: 0 })]));
    const same = t.update(s('2026-11-22T08:00:05Z', [c(ID_A, { cpu_usage_ns: 1e9 })]));
    expect(same.elapsedSeconds).toBeNull();
    expect(same.containers[0].cpuPercent).toBeNull();
    const back = t.update(s('2026-11-22T08:00:04Z', [c(ID_A, { cpu_usage_ns: 2e9 })]));
    expect(back.containers[0].cpuPercent).toBeNull();
    const next = t.update(s('2026-11-22T08:00:06Z', [c(ID_A, { cpu_usage_ns: 2.5e9 })]));
    expect(next.containers[0].cpuPercent).toBe(25);
  });

  it('keeps VMs apart', () => {
    const t = new RateTracker();
    t.update(s('2026-11-22T08:00:00Z', [c(ID_A, { cpu_usage_ns: 0 })], 'web'));
    t.update(s('2026-11-22T08:00:00Z', [c(ID_A, { cpu_usage_ns: 5e9 })], 'db'));
    const web = t.update(s('2026-11-22T08:00:04Z', [c(ID_A, { cpu_usage_ns: 1e9 })], 'web'));
    const db = t.update(s('2026-11-22T08:00:02Z', [c(ID_A, { cpu_usage_ns: 6e9 }), c(ID_C)], 'db'));
    expect(web.containers[0].cpuPercent).toBe(25);
    expect(db.containers[0].cpuPercent).toBe(50);
    expect(db.appeared).toEqual([ID_C]);
    expect(t.vms().sort()).toEqual(['db', 'web']);
    t.forget('db');
    expect(t.vms()).toEqual(['web']);
  });
});
