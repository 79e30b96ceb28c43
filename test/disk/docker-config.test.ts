import { describe, expect, it } from 'vitest';
import { MAX_LABELS, parseDockerConfig, parseHostConfig } from '../../disk/docker-config.ts';

const ID = 'c'.repeat(64);
const cfg = (config: unknown) => JSON.stringify({ ID, Name: '/web', Config: config });

describe('parseDockerConfig labels', () => {
  it('keeps Config.Labels string entries as written, and has no labels field when there are none', () => {
    const info = parseDockerConfig(ID, cfg({ Image: 'nginx:1.25', Labels: { 'com.example.team': 'web', tier: 'front' } }));
    expect(info).toEqual({ id: ID, name: 'web', image: 'nginx:1.25', labels: { 'com.example.team': 'web', tier: 'front' } });
    expect(parseDockerConfig(ID, cfg({ Image: 'nginx', Labels: {} }))).toEqual({ id: ID, name: 'web', image: 'nginx' });
    expect(Object.keys(parseDockerConfig(ID, cfg({ Image: 'nginx', Labels: null }))!)).toEqual(['id', 'name', 'image']);
  });

  it('drops hostile label entries one by one and keeps the name', () => {
    const labels: Record<string, unknown> = {
      ok: 'yes',
      num: 7,
      obj: { a: 1 },
      '': 'empty key',
      ['k'.repeat(257)]: 'long key',
      long: 'v'.repeat(4097),
      'a"b\nc': 'x\u001b[2Jy',
    };
    const info = parseDockerConfig(ID, cfg({ Image: 'nginx', Labels: labels }))!;
    // kept as data (escaped where exported); only type and size are checked here
    expect(info.labels).toEqual({ ok: 'yes', 'a"b\nc': 'x\u001b[2Jy' });
    expect(parseDockerConfig(ID, cfg({ Labels: ['not', 'a', 'map'] }))).toEqual({ id: ID, name: 'web', image: '' });
    expect(parseDockerConfig(ID, cfg('garbage'))).toEqual({ id: ID, name: 'web', image: '' });
  });

  it('keeps at most MAX_LABELS labels (the first by key)', () => {
    const many = Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`l${String(i).padStart(3, '0')}`, String(i)]));
    const info = parseDockerConfig(ID, cfg({ Labels: many }))!;
    expect(Object.keys(info.labels!)).toHaveLength(MAX_LABELS);
    expect(info.labels!.l000).toBe('0');
    expect(info.labels!.l063).toBe('63');
    expect(info.labels!.l064).toBeUndefined();
  });
});

describe('parseHostConfig', () => {
  it("reads what Docker writes for `docker run` with no limits: unlimited memory, 1024 shares, 100 ms period, no quota", () => {
    // the limit fields as Docker writes them for a container run without limits (all zero)
    const text = JSON.stringify({ Memory: 0, MemoryReservation: 0, MemorySwap: 0, CpuShares: 0, CpuPeriod: 0, CpuQuota: 0, NanoCpus: 0, RestartPolicy: { Name: 'no' } });
    expect(parseHostConfig(text)).toEqual({ memoryBytes: 0, memorySwapBytes: 0, memoryReservationBytes: 0, cpuShares: 1024, cpuPeriodUs: 100_000, cpuQuotaUs: 0 });
  });

  it('applies Docker semantics: --memory (swap twice it), --memory-swap, --cpu-shares, --cpu-period/--cpu-quota, --cpus', () => {
    expect(parseHostConfig(JSON.stringify({ Memory: 268_435_456, MemorySwap: 0, MemoryReservation: 134_217_728, CpuShares: 512, CpuPeriod: 50_000, CpuQuota: 25_000 }))).toEqual({
      memoryBytes: 268_435_456,
      memorySwapBytes: 536_870_912,
      memoryReservationBytes: 134_217_728,
      cpuShares: 512,
      cpuPeriodUs: 50_000,
      cpuQuotaUs: 25_000,
    });
    expect(parseHostConfig(JSON.stringify({ Memory: 100_000_000, MemorySwap: -1 }))!.memorySwapBytes).toBe(0);
    expect(parseHostConfig(JSON.stringify({ Memory: 100_000_000, MemorySwap: 300_000_000 }))!.memorySwapBytes).toBe(300_000_000);
    // --cpus 1.5
    const cpus = parseHostConfig(JSON.stringify({ NanoCpus: 1_500_000_000, CpuPeriod: 0, CpuQuota: 0 }))!;
    expect([cpus.cpuPeriodUs, cpus.cpuQuotaUs]).toEqual([100_000, 150_000]);
    expect(parseHostConfig(JSON.stringify({ CpuQuota: -1 }))!.cpuQuotaUs).toBe(0);
  });

  it('makes a garbage field unknown (absent), not a default, and refuses what is not a hostconfig', () => {
    const l = parseHostConfig(JSON.stringify({ Memory: 'lots', MemorySwap: 0, CpuShares: 1e300, CpuPeriod: 1.5, CpuQuota: { x: 1 }, MemoryReservation: -5 }))!;
    expect(l).toEqual({});
    const m = parseHostConfig(JSON.stringify({ Memory: 2 ** 60, CpuShares: -3, CpuPeriod: 100_000, CpuQuota: 50_000 }))!;
    expect(m).toEqual({ memoryReservationBytes: 0, cpuPeriodUs: 100_000, cpuQuotaUs: 50_000 });
    expect(parseHostConfig('{}')).toBeUndefined();
    expect(parseHostConfig('[1,2]')).toBeUndefined();
    expect(parseHostConfig('{"Memory": 1')).toBeUndefined();
    expect(parseHostConfig('\u0000\u00ff')).toBeUndefined();
  });
});
