import { afterEach, describe, expect, it } from 'vitest';
import { PrometheusExporter, workingSetBytes } from '../../monitor/prometheus.ts';
import type { ContainerSample, Sample } from '../../vmi/sample.ts';
import type { SampleObserver, SessionSample } from '../../vmi/session.ts';
import { containerSample } from '../fixtures/sample.ts';

const ID_A = 'a'.repeat(64);
const ID_B = 'b'.repeat(64);

const c = (id: string, v: Partial<ContainerSample> & { memory_inactive_file_bytes?: number } = {}): ContainerSample => containerSample(id, v);

interface Series {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** A strict parser of the text exposition format 0.0.4 (what Prometheus scrapes). */
function parseExposition(text: string) {
  const types = new Map<string, string>();
  const helps = new Map<string, string>();
  const series: Series[] = [];
  expect(text.endsWith('\n')).toBe(true);
  for (const line of text.split('\n')) {
    if (line === '') continue;
    let m: RegExpExecArray | null;
    if ((m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line))) {
      helps.set(m[1], m[2]);
      continue;
    }
    if ((m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line))) {
      types.set(m[1], m[2]);
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not an exposition line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    if (m[2]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/gy;
      let lm: RegExpExecArray | null;
      let end = 0;
      while ((lm = re.exec(m[2]))) {
        labels[lm[1]] = lm[2].replace(/\\(.)/g, (_x, ch: string) => (ch === 'n' ? '\n' : ch));
        end = re.lastIndex;
      }
      expect(end).toBe(m[2].length);
    }
    const value = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]);
    expect(Number.isNaN(value)).toBe(false);
    series.push({ name: m[1], labels, value });
  }
  const get = (name: string, want: Record<string, string>) =>
    series.filter((s) => s.name === name && Object.entries(want).every(([k, v]) => s.labels[k] === v));
  return { types, helps, series, get };
}

let exporter: PrometheusExporter | undefined;
afterEach(async () => {
  await exporter?.close();
  exporter = undefined;
});

describe('workingSetBytes', () => {
  it('is usage - inactive_file, floored at 0, and usage when inactive_file is unknown', () => {
    expect(workingSetBytes(c(ID_A, { memory_usage_bytes: 1000, memory_inactive_file_bytes: 300 }))).toBe(700);
    expect(workingSetBytes(c(ID_A, { memory_usage_bytes: 1000, memory_inactive_file_bytes: 3000 }))).toBe(0);
    expect(workingSetBytes(c(ID_A, { memory_usage_bytes: 1000 }))).toBe(1000);
  });
});

describe('PrometheusExporter', () => {
  it('serves cAdvisor-named metrics with exact cumulative values over HTTP on loopback', async () => {
    exporter = new PrometheusExporter({ port: 0 });
    const addr = await exporter.listen();
    expect(addr.host).toBe('127.0.0.1');
    expect(addr.port).toBeGreaterThan(0);

    const s1: Sample = {
      time: '2026-11-22T08:00:00Z',
      kernel: '6.1.0-56-amd64',
      sample_us: 420,
      vm: 'web',
      containers: [
        c(ID_A, {
          cpu_usage_ns: 1_500_000_000,
          memory_usage_bytes: 104_857_600,
          memory_inactive_file_bytes: 4_857_600,
          memory_rss_bytes: 60_000_000,
          memory_cache_bytes: 40_000_000,
          io_read_bytes: 4096,
          io_write_bytes: 8192,
          net_rx_bytes: 123_456,
          net_tx_bytes: 654_321,
          pids: 7,
        } as Partial<ContainerSample>),
        c(ID_B, { cpu_usage_ns: 2_000_000, memory_usage_bytes: 5000, name: '/from-sample' }),
      ],
    };
    exporter.observe(s1, new Map([[ID_A, { name: '/nginx', image: 'nginx:1.25' }]]));
    exporter.observe({ ...s1, vm: 'db', sample_us: 3000, containers: [c(ID_A, { cpu_usage_ns: 7_000_000_000 })] });
    exporter.recordError('web');
    exporter.recordError('web');
    exporter.setTlbHitRatio('web', 0.875);

    const res = await fetch(addr.url);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    const p = parseExposition(await res.text());

    expect(p.types.get('container_cpu_usage_seconds_total')).toBe('counter');
    for (const n of ['container_fs_reads_bytes_total', 'container_fs_writes_bytes_total', 'container_network_receive_bytes_total', 'container_network_transmit_bytes_total', 'ciel_sample_errors_total'])
      expect(p.types.get(n)).toBe('counter');
    for (const n of ['container_memory_usage_bytes', 'container_memory_working_set_bytes', 'container_memory_rss', 'container_memory_cache', 'ciel_tlb_hit_ratio'])
      expect(p.types.get(n)).toBe('gauge');
    expect(p.types.get('ciel_sample_duration_seconds')).toBe('histogram');

    const a = { id: `/system.slice/docker-${ID_A}.scope`, vm: 'web' };
    expect(p.get('container_cpu_usage_seconds_total', a)).toEqual([
      { name: 'container_cpu_usage_seconds_total', labels: { ...a, name: 'nginx', image: 'nginx:1.25', cpu: 'total' }, value: 1.5 },
    ]);
    expect(p.get('container_memory_usage_bytes', a)[0].value).toBe(104_857_600);
    expect(p.get('container_memory_working_set_bytes', a)[0].value).toBe(100_000_000);
    expect(p.get('container_memory_rss', a)[0].value).toBe(60_000_000);
    expect(p.get('container_memory_cache', a)[0].value).toBe(40_000_000);
    expect(p.get('container_fs_reads_bytes_total', a)[0].value).toBe(4096);
    expect(p.get('container_fs_writes_bytes_total', a)[0].value).toBe(8192);
    expect(p.get('container_network_receive_bytes_total', a)[0].value).toBe(123_456);
    expect(p.get('container_network_transmit_bytes_total', a)[0].value).toBe(654_321);
    expect(p.get('container_processes', a)[0].value).toBe(7);

    // B: name from the sample (leading slash dropped), no image known; working set = usage (no inactive_file)
    const b = p.get('container_memory_working_set_bytes', { id: `/system.slice/docker-${ID_B}.scope` });
    expect(b).toEqual([
      { name: 'container_memory_working_set_bytes', labels: { id: `/system.slice/docker-${ID_B}.scope`, name: 'from-sample', image: '', vm: 'web' }, value: 5000 },
    ]);
    expect(p.get('container_cpu_usage_seconds_total', { vm: 'db' })[0].value).toBe(7);
    expect(p.get('container_cpu_usage_seconds_total', {})).toHaveLength(3);

    expect(p.get('ciel_sample_errors_total', { vm: 'web' })[0].value).toBe(2);
    expect(p.get('ciel_tlb_hit_ratio', { vm: 'web' })[0].value).toBe(0.875);
    expect(p.get('ciel_sample_duration_seconds_count', { vm: 'web' })[0].value).toBe(1);
    expect(p.get('ciel_sample_duration_seconds_sum', { vm: 'web' })[0].value).toBe(0.00042);
    expect(p.get('ciel_sample_duration_seconds_bucket', { vm: 'web', le: '0.00025' })[0].value).toBe(0);
    expect(p.get('ciel_sample_duration_seconds_bucket', { vm: 'web', le: '0.0005' })[0].value).toBe(1);
    expect(p.get('ciel_sample_duration_seconds_bucket', { vm: 'db', le: '0.0025' })[0].value).toBe(0);
    expect(p.get('ciel_sample_duration_seconds_bucket', { vm: 'db', le: '0.005' })[0].value).toBe(1);
    expect(p.get('ciel_sample_duration_seconds_bucket', { vm: 'db', le: '+Inf' })[0].value).toBe(1);

    // the next sample replaces the VM's values (counters follow the guest's cumulative values);
    // a container gone from the VM leaves the exposition; a guest reboot shows as a counter reset
    exporter.observe({ ...s1, time: '2026-11-22T08:00:01Z', containers: [c(ID_A, { cpu_usage_ns: 250_000_000 })] });
    const p2 = parseExposition(await (await fetch(addr.url)).text());
    expect(p2.get('container_cpu_usage_seconds_total', { vm: 'web' })).toEqual([
      { name: 'container_cpu_usage_seconds_total', labels: { ...a, name: 'nginx', image: 'nginx:1.25', cpu: 'total' }, value: 0.25 },
    ]);
    expect(p2.get('ciel_sample_duration_seconds_count', { vm: 'web' })[0].value).toBe(2);

    exporter.removeVm('db');
    const p3 = parseExposition(await (await fetch(addr.url)).text());
    expect(p3.get('container_cpu_usage_seconds_total', { vm: 'db' })).toEqual([]);
  });

  it('takes samples from any VmSession user (SampleObserver): sample, TLB ratio, truncated walk and failures as errors', async () => {
    exporter = new PrometheusExporter({ port: 0 });
    const observer: SampleObserver = exporter;
    exporter.expectVms(['web', 'db']);
    const s: SessionSample = {
      time: '2026-11-22T08:00:00Z',
      kernel: '6.1.0-56-amd64',
      sample_us: 300,
      pause_us: 1200,
      vm: 'web',
      tlb_hit_ratio: 0.5,
      containers: [c(ID_A, { cpu_usage_ns: 3_000_000_000, name: 'web' })],
    };
    let p = parseExposition(await exporter.metrics());
    expect(p.get('ciel_sample_errors_total', { vm: 'web' })[0].value).toBe(0);
    expect(p.get('ciel_sample_errors_total', { vm: 'db' })[0].value).toBe(0);

    observer.onSample(s, new Map([[ID_A, { image: 'nginx:1.25' }]]));
    observer.onSample({ ...s, vm: 'db', tlb_hit_ratio: 0.25, truncated: ['limit'], containers: [c(ID_B, { cpu_usage_ns: 500_000_000 })] });
    observer.onError('db', new Error('db: guest fault at 0x0: page not present'));
    p = parseExposition(await exporter.metrics());
    expect(p.get('container_cpu_usage_seconds_total', { vm: 'web' })).toEqual([
      { name: 'container_cpu_usage_seconds_total', labels: { id: `/system.slice/docker-${ID_A}.scope`, name: 'web', image: 'nginx:1.25', vm: 'web', cpu: 'total' }, value: 3 },
    ]);
    expect(p.get('container_cpu_usage_seconds_total', { vm: 'db' })[0].value).toBe(0.5);
    expect(p.get('ciel_tlb_hit_ratio', { vm: 'web' })[0].value).toBe(0.5);
    expect(p.get('ciel_tlb_hit_ratio', { vm: 'db' })[0].value).toBe(0.25);
    expect(p.get('ciel_sample_errors_total', { vm: 'web' })[0].value).toBe(0);
    // the truncated sample and the failure
    expect(p.get('ciel_sample_errors_total', { vm: 'db' })[0].value).toBe(2);
    expect(p.get('ciel_sample_duration_seconds_count', { vm: 'web' })[0].value).toBe(1);
  });

  it('writes the cAdvisor label sets, container_last_seen and container_spec_* as exact exposition lines', async () => {
    exporter = new PrometheusExporter();
    const limits = { memoryBytes: 268_435_456, memorySwapBytes: 536_870_912, memoryReservationBytes: 0, cpuShares: 512, cpuPeriodUs: 100_000, cpuQuotaUs: 50_000 };
    exporter.observe(
      {
        time: '2026-12-05T03:00:00.750Z',
        kernel: '6.1.0-56-amd64',
        sample_us: 100,
        vm: 'vm1',
        containers: [
          c(ID_A, { cgroup: `/docker/${ID_A}`, cpu_usage_ns: 1_500_000_000, io_read_bytes: 4096, net_rx_bytes: 10, net_tx_bytes: 20 }),
          c(ID_B, { cgroup: `/docker/${ID_B}`, cpu_usage_ns: 7 }),
        ],
      },
      new Map([
        [ID_A, { name: 'web', image: 'nginx:1.25', labels: { 'com.example.team': 'a"b\\c\nd\u001b[2J', tier: 'front' }, limits }],
        // no limits known (no hostconfig.json), no quota: no container_spec_* series at all
        [ID_B, { name: 'db', image: '' }],
      ]),
    );
    const text = await exporter.metrics();
    const lines = (name: string) => text.split('\n').filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
    const a = `id="/docker/${ID_A}",name="web",image="nginx:1.25",vm="vm1",container_label_com_example_team="a\\"b\\\\c\\nd?[2J",container_label_tier="front"`;
    const b = `id="/docker/${ID_B}",name="db",image="",vm="vm1"`;
    expect(lines('container_last_seen')).toEqual([`container_last_seen{${a}} 1796439600`, `container_last_seen{${b}} 1796439600`]);
    expect(lines('container_cpu_usage_seconds_total')).toEqual([`container_cpu_usage_seconds_total{${a},cpu="total"} 1.5`, `container_cpu_usage_seconds_total{${b},cpu="total"} 7e-9`]);
    expect(lines('container_fs_reads_bytes_total')[0]).toBe(`container_fs_reads_bytes_total{${a},device="total"} 4096`);
    expect(lines('container_network_receive_bytes_total')[0]).toBe(`container_network_receive_bytes_total{${a},interface="eth0"} 10`);
    expect(lines('container_network_transmit_bytes_total')[1]).toBe(`container_network_transmit_bytes_total{${b},interface="eth0"} 0`);
    expect(lines('container_spec_cpu_period')).toEqual([`container_spec_cpu_period{${a}} 100000`]);
    expect(lines('container_spec_cpu_quota')).toEqual([`container_spec_cpu_quota{${a}} 50000`]);
    expect(lines('container_spec_cpu_shares')).toEqual([`container_spec_cpu_shares{${a}} 512`]);
    expect(lines('container_spec_memory_limit_bytes')).toEqual([`container_spec_memory_limit_bytes{${a}} 268435456`]);
    expect(lines('container_spec_memory_swap_limit_bytes')).toEqual([`container_spec_memory_swap_limit_bytes{${a}} 536870912`]);
    expect(lines('container_spec_memory_reservation_limit_bytes')).toEqual([`container_spec_memory_reservation_limit_bytes{${a}} 0`]);
    expect(text).toContain('# HELP container_spec_memory_limit_bytes Memory limit for the container.\n# TYPE container_spec_memory_limit_bytes gauge\n');
    expect(text).toContain('# TYPE container_last_seen gauge\n');
    // the strict parser reads every line back, labels unescaped to the cleaned guest value
    const p = parseExposition(text);
    expect(p.get('container_memory_usage_bytes', { name: 'web' })[0].labels.container_label_com_example_team).toBe('a"b\\c\nd?[2J');

    // no quota: cAdvisor exports no container_spec_cpu_quota; unlimited memory is 0
    exporter.observe(
      { time: '2026-12-05T03:00:05Z', kernel: '6.1.0-56-amd64', sample_us: 100, vm: 'vm1', containers: [c(ID_A, { cgroup: `/docker/${ID_A}` })] },
      new Map([[ID_A, { name: 'web', image: 'nginx:1.25', limits: { ...limits, cpuQuotaUs: 0, memoryBytes: 0 } }]]),
    );
    const t2 = await exporter.metrics();
    expect(t2).not.toMatch(/^container_spec_cpu_quota\{/m);
    expect(t2).toContain(`container_spec_memory_limit_bytes{id="/docker/${ID_A}",name="web",image="nginx:1.25",vm="vm1"} 0\n`);
    expect(t2).toContain(`container_last_seen{id="/docker/${ID_A}",name="web",image="nginx:1.25",vm="vm1"} 1796439605\n`);
  });

  it('keeps hostile Docker labels harmless: one valid series per container whatever the keys and values', async () => {
    exporter = new PrometheusExporter();
    const hostile: Record<string, string> = {
      'a.b': 'x',
      'a-b': 'y',
      '__name__': 'evil',
      'le': '"}\nfake_metric 1\n#',
      'x\u0000y': '\udc00',
      ['k'.repeat(256)]: 'v'.repeat(4096),
      'sp ace': '\u202e\u001b]0;title\u0007',
    };
    exporter.observe({ time: '2026-12-05T03:00:00Z', kernel: 'k', sample_us: 1, vm: 'vm1', containers: [c(ID_A, { cpu_usage_ns: 1e9 })] }, new Map([[ID_A, { name: 'web', labels: hostile }]]));
    const text = await exporter.metrics();
    expect(text).not.toMatch(/^fake_metric/m);
    const p = parseExposition(text);
    const s = p.get('container_cpu_usage_seconds_total', {});
    expect(s).toHaveLength(1);
    expect(s[0].value).toBe(1);
    expect(Object.keys(s[0].labels).sort()).toEqual(
      ['id', 'name', 'image', 'vm', 'cpu', 'container_label_a_b', 'container_label___name__', 'container_label_le', 'container_label_x_y', `container_label_${'k'.repeat(256)}`, 'container_label_sp_ace'].sort(),
    );
    expect(s[0].labels.container_label_a_b).toBe('y');
    expect(s[0].labels.container_label_le).toBe('"}\nfake_metric 1\n#');
    expect(s[0].labels.container_label_x_y).toBe('\ufffd');
    expect([...s[0].labels[`container_label_${'k'.repeat(256)}`]]).toHaveLength(1024);
    expect(s[0].labels.container_label_sp_ace).toBe('??]0;title?');
    expect(Buffer.from(text, 'utf8').toString('utf8')).toBe(text);

    // the same cgroup listed twice by the guest: one series (the first), never a duplicate sample
    exporter.observe({ time: '2026-12-05T03:00:01Z', kernel: 'k', sample_us: 1, vm: 'vm1', containers: [c(ID_A, { cpu_usage_ns: 2e9 }), c(ID_A, { cpu_usage_ns: 9e9 })] });
    const twice = parseExposition(await exporter.metrics()).get('container_cpu_usage_seconds_total', {});
    expect(twice.map((x) => x.value)).toEqual([2]);
  });

  it('answers 404 off /metrics and 405 to POST', async () => {
    exporter = new PrometheusExporter({ port: 0 });
    const { port } = await exporter.listen();
    expect((await fetch(`http://127.0.0.1:${port}/`)).status).toBe(404);
    expect((await fetch(`http://127.0.0.1:${port}/metrics`, { method: 'POST' })).status).toBe(405);
  });

  it('binds 127.0.0.1:9464 by default and reports a busy port as an error', async () => {
    exporter = new PrometheusExporter();
    let addr;
    try {
      addr = await exporter.listen();
    } catch (e) {
      // someone else on this machine holds 9464: the error must say so
      expect(String(e)).toMatch(/9464: the port is in use/);
      return;
    }
    expect(addr).toEqual({ host: '127.0.0.1', port: 9464, url: 'http://127.0.0.1:9464/metrics', everyInterface: false });
    const second = new PrometheusExporter();
    await expect(second.listen()).rejects.toThrow('cannot serve metrics on 127.0.0.1:9464: the port is in use');
  });
});
