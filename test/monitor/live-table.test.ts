import { describe, expect, it } from 'vitest';
import { LiveTable, displayName, renderVm } from '../../monitor/live-table.ts';
import type { ContainerRates, VmRates } from '../../vmi/rates.ts';
import { formatBytes, formatPercent, formatRate } from '../../monitor/units.ts';

function cr(id: string, v: Partial<ContainerRates> = {}): ContainerRates {
  return {
    id,
    cgroup: `/docker/${id}`,
    cpuPercent: null,
    memoryBytes: 0,
    memoryRssBytes: 0,
    memoryCacheBytes: 0,
    pids: 1,
    diskReadBps: null,
    diskWriteBps: null,
    netRxBps: null,
    netTxBps: null,
    ...v,
  };
}

const ID1 = '0123456789ab' + 'f'.repeat(52);

const vmA: VmRates = {
  vm: 'web',
  time: '2026-11-22T08:00:01.500Z',
  elapsedSeconds: 1.5,
  appeared: [],
  disappeared: [],
  containers: [
    cr(ID1, { cpuPercent: 12.25, memoryBytes: 123_456_789, diskReadBps: 0, diskWriteBps: 1536, netRxBps: 2_000_000, netTxBps: 512 }),
    cr('e'.repeat(64), { name: '/nginx', cpuPercent: 150, memoryBytes: 2 * 1024 ** 3, diskReadBps: 10_485_760, diskWriteBps: 0, netRxBps: 1024, netTxBps: 999 }),
    cr('d'.repeat(64), { name: 'new', memoryBytes: 1000 }),
  ],
};

describe('units', () => {
  it('formats bytes, rates and percents', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1023)).toBe('1023 B');
    expect(formatBytes(1536)).toBe('1.50 KiB');
    expect(formatBytes(123_456_789)).toBe('118 MiB');
    expect(formatBytes(15.5 * 1024 ** 3)).toBe('15.5 GiB');
    expect(formatRate(null)).toBe('-');
    expect(formatRate(2_000_000)).toBe('1.91 MiB/s');
    expect(formatPercent(null)).toBe('-');
    expect(formatPercent(12.25)).toBe('12.3%');
  });

  it('names: friendly name without the leading slash, else the short id', () => {
    expect(displayName({ id: ID1, cgroup: '' })).toBe('0123456789ab');
    expect(displayName({ id: ID1, cgroup: '', name: '/nginx' })).toBe('nginx');
    expect(displayName({ id: 'init.scope', cgroup: '/init.scope' })).toBe('init.scope');
  });
});

describe('renderVm', () => {
  it('renders an aligned table, busiest first, containers without rates last', () => {
    expect(renderVm(vmA)).toEqual([
      'VM web  2026-11-22T08:00:01.500Z  3 container(s)  over 1.500 s',
      'CONTAINER      CPU %       MEM   DISK READ  DISK WRITE      NET RX   NET TX',
      'nginx         150.0%  2.00 GiB  10.0 MiB/s       0 B/s  1.00 KiB/s  999 B/s',
      '0123456789ab   12.3%   118 MiB       0 B/s  1.50 KiB/s  1.91 MiB/s  512 B/s',
      'new                -    1000 B           -           -           -        -',
    ]);
  });
});

class Sink {
  data = '';
  constructor(
    readonly isTTY: boolean,
    readonly columns?: number,
  ) {}
  write(s: string) {
    this.data += s;
    return true;
  }
}

describe('LiveTable', () => {
  it('plain output (not a TTY) has no escape sequences', () => {
    const out = new Sink(false);
    const t = new LiveTable(out);
    t.update(vmA);
    t.update({ ...vmA, time: '2026-11-22T08:00:02.500Z' });
    expect(out.data).not.toContain('\x1b');
    expect(out.data.split('\n').filter((l) => l.startsWith('VM web'))).toHaveLength(2);
    expect(out.data.endsWith('\n\n')).toBe(true);
  });

  it('TTY output redraws in place', () => {
    const out = new Sink(true);
    const t = new LiveTable(out);
    const one: VmRates = { ...vmA, containers: [vmA.containers[0]] };
    t.update(one);
    const first = out.data;
    expect(first).toBe(renderVm(one).map((l) => `\x1b[2K${l}\n`).join('') + '\x1b[J');
    out.data = '';
    const db: VmRates = { ...one, vm: 'db' };
    t.update(db);
    // back up 3 lines (the block drawn before), then draw both VMs (db first, by name) and clear below
    const both = [...renderVm(db), '', ...renderVm(one)];
    expect(out.data).toBe('\r\x1b[3A' + both.map((l) => `\x1b[2K${l}\n`).join('') + '\x1b[J');
    out.data = '';
    t.remove('db');
    expect(out.data.startsWith(`\r\x1b[${both.length}A`)).toBe(true);
    expect(out.data.endsWith('\x1b[J')).toBe(true);
  });

  it('TTY output never grows past the terminal height', () => {
    const out = new Sink(true) as Sink & { rows: number };
    out.rows = 4;
    new LiveTable(out).update(vmA);
    expect(out.data).toBe(
      renderVm(vmA)
        .slice(0, 2)
        .map((l) => `\x1b[2K${l}\n`)
        .join('') + '\x1b[2K... 3 more line(s): enlarge the terminal\n\x1b[J',
    );
  });

  it('TTY lines are cut to the terminal width', () => {
    const out = new Sink(true, 20);
    new LiveTable(out).update(vmA);
    const lines = out.data.replace(/\x1b\[(2K|J)/g, '').split('\n').filter(Boolean);
    for (const l of lines) expect(l.length).toBeLessThanOrEqual(19);
  });
});
