// The exporter as a cAdvisor user would consume it: a real Prometheus (Debian's `prometheus` package,
// installed by scripts/install-deps.sh) started here on loopback with a temporary config, scraping
// `ciel monitor --prometheus` (a real subprocess) that samples the live test guest and names its
// containers from the guest's Docker disk (config.v2.json labels, hostconfig.json limits). The
// exposition passes `promtool check metrics`, and the PromQL a stock cAdvisor dashboard uses returns
// the series the guest's known load implies.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GENERATED } from '../../common/build-artifact.ts';
import { buildMonitor } from '../../compiler/build.ts';
import { bootGuest, type Guest } from '../../testbed/guest/boot.ts';
import { DOCKER_DISK_INFO } from '../../testbed/guest/build.ts';
import { GUEST_CONTAINERS, LOAD } from '../../testbed/guest/containers.ts';

const RELEASE = '6.1.0-56-amd64';
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CIEL = join(ROOT, 'bin', 'ciel.mjs');
const SCRAPE_S = 1;

const found = (tool: string) => spawnSync(tool, ['--version'], { stdio: 'ignore' }).status === 0;
const MISSING = ['prometheus', 'promtool'].filter((t) => !found(t));
if (MISSING.length) console.warn(`SKIPPED prometheus-server.test.ts: ${MISSING.join(' and ')} not installed (Debian package prometheus; scripts/install-deps.sh installs it)`);

interface PromSeries {
  metric: Record<string, string>;
  value: [number, string];
}

/** A free loopback port (bound and released; Prometheus then binds it). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>, diag: () => string = () => ''): Promise<T> {
  const t0 = Date.now();
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() - t0 > timeoutMs) throw new Error(`no ${what} within ${timeoutMs} ms (${String(last ?? 'condition not met')})\n${diag()}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

let guest: Guest | undefined;
let tmp: string | undefined;
let monitor: ChildProcess | undefined;
let prometheus: ChildProcess | undefined;
let monitorErr = '';
let promErr = '';
let metricsUrl = '';
let promUrl = '';

async function query(q: string): Promise<PromSeries[]> {
  const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(q)}`);
  const body = (await res.json()) as { status: string; error?: string; data?: { resultType: string; result: PromSeries[] } };
  if (body.status !== 'success') throw new Error(`${q}: ${body.error}`);
  return body.data!.result;
}
const val = (s: PromSeries) => Number(s.value[1]);

function stopChild(p: ChildProcess | undefined): Promise<void> {
  if (!p || p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => p.kill('SIGKILL'), 10_000);
    p.once('close', () => {
      clearTimeout(t);
      resolve();
    });
    p.kill('SIGTERM');
  });
}

describe.skipIf(MISSING.length > 0)('a real Prometheus scraping ciel monitor on the live test guest', () => {
  beforeAll(async () => {
    // build only when there is none: a rebuild takes 10-20 s and rewrites a build other test runs may be loading
    if (!existsSync(join(GENERATED, RELEASE, 'monitor.so'))) await buildMonitor({ release: RELEASE, log: (l) => process.stderr.write(`[build] ${l}\n`) });
    guest = await bootGuest({ name: `promsrv-${process.pid}`, dockerDisk: true });
    tmp = mkdtempSync(join(tmpdir(), 'ciel-prometheus-test-'));

    monitor = spawn(
      process.execPath,
      [CIEL, 'monitor', '--qemu', guest.qmpSocket, '--memory', guest.memFile, '--kernel', RELEASE, '--disk', guest.dockerDisk!, '--vm', 'g', '--interval', '500ms', '--prometheus', '127.0.0.1:0', '--quiet'],
      { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    monitor.stderr!.setEncoding('utf8').on('data', (d: string) => (monitorErr += d));
    metricsUrl = await waitFor(
      'metrics URL from ciel monitor',
      60_000,
      async () => {
        if (monitor!.exitCode !== null) throw new Error(`ciel monitor exited with ${monitor!.exitCode}`);
        return /metrics at (\S+)/.exec(monitorErr)?.[1];
      },
      () => monitorErr,
    );
    const target = new URL(metricsUrl).host;

    const port = await freePort();
    promUrl = `http://127.0.0.1:${port}`;
    const config = join(tmp, 'prometheus.yml');
    writeFileSync(
      config,
      [
        'global:',
        `  scrape_interval: ${SCRAPE_S}s`,
        `  scrape_timeout: ${SCRAPE_S}s`,
        'scrape_configs:',
        '  - job_name: ciel',
        '    static_configs:',
        `      - targets: ['${target}']`,
        '',
      ].join('\n'),
    );
    prometheus = spawn('prometheus', [`--config.file=${config}`, `--storage.tsdb.path=${join(tmp, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    prometheus.stderr!.setEncoding('utf8').on('data', (d: string) => (promErr += d));
    await waitFor('Prometheus ready', 60_000, async () => ((await fetch(`${promUrl}/-/ready`)).ok ? true : undefined), () => promErr);
    // enough scrapes of every container for a rate over 10 s
    await waitFor(
      '12 scrapes of the guest',
      90_000,
      async () => {
        const r = await query('min(count_over_time(container_last_seen{vm="g"}[30s]))');
        return r.length && val(r[0]) >= 12 ? true : undefined;
      },
      () => `prometheus: ${promErr.slice(-2000)}\nciel: ${monitorErr.slice(-2000)}`,
    );
  }, 900_000);

  afterAll(async () => {
    await stopChild(prometheus);
    await stopChild(monitor);
    await guest?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('promtool check metrics accepts the exposition as served', async () => {
    const text = await (await fetch(metricsUrl)).text();
    const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
    expect(`${r.stdout}${r.stderr}`.trim()).toBe('');
    // what was checked is the real thing: every guest container with its Docker labels and limits
    expect(text).toContain('container_label_com_docker_compose_service="web"');
    expect(text).toMatch(/^container_spec_cpu_quota\{.*name="web".*\} 50000$/m);
  });

  it('Prometheus scrapes it healthy, every guest container under its name', async () => {
    expect((await query('up{job="ciel"}')).map(val)).toEqual([1]);
    const seen = await query('container_last_seen{vm="g"}');
    expect(seen.map((s) => s.metric.name).sort()).toEqual(GUEST_CONTAINERS.map((c) => DOCKER_DISK_INFO[c.name].name).sort());
    // the sample that last saw them is at most a few intervals old
    const age = await query('max(time() - container_last_seen{vm="g"})');
    expect(val(age[0])).toBeLessThan(5);
    expect(val(age[0])).toBeGreaterThan(-2);
  });

  it('rate(container_cpu_usage_seconds_total{name="web"}) is the burner under its 0.5-CPU quota; the idle sidecar is near 0', async () => {
    const web = await query('rate(container_cpu_usage_seconds_total{name="web",cpu="total"}[10s])');
    expect(web).toHaveLength(1);
    expect(web[0].metric).toMatchObject({ name: 'web', image: DOCKER_DISK_INFO.burner.image, vm: 'g', container_label_com_docker_compose_project: 'ciel-test' });
    // the CFS quota caps it at 0.5 (guest time follows wall time under TCG); a loaded host can only lower it
    console.log(`measured: rate(container_cpu_usage_seconds_total{name="web"}[10s]) = ${val(web[0]).toFixed(3)}`);
    expect(val(web[0])).toBeLessThanOrEqual(LOAD.burnerCpuFraction * 1.1);
    expect(val(web[0])).toBeGreaterThan(LOAD.burnerCpuFraction * 0.3);
    const idle = await query('rate(container_cpu_usage_seconds_total{name="sidecar"}[10s])');
    expect(val(idle[0])).toBeLessThan(0.05);
  });

  it('container_spec_* carry the limits from hostconfig.json in cAdvisor units', async () => {
    expect((await query('container_spec_cpu_quota{vm="g"}')).map((s) => [s.metric.name, val(s)])).toEqual([['web', 50_000]]);
    expect((await query('container_spec_cpu_period{name="web"}')).map(val)).toEqual([100_000]);
    expect((await query('count(container_spec_cpu_shares{vm="g"} == 1024)')).map(val)).toEqual([GUEST_CONTAINERS.length]);
    expect((await query('count(container_spec_memory_limit_bytes{vm="g"} == 0)')).map(val)).toEqual([GUEST_CONTAINERS.length]);
    // the dashboard's "CPU % of limit" panel
    const pct = await query('rate(container_cpu_usage_seconds_total{name="web"}[10s]) / on(id) (container_spec_cpu_quota / container_spec_cpu_period)');
    expect(val(pct[0])).toBeLessThanOrEqual(1.1);
  });

  it('container_label_* select and group: the cache service by its compose label, all by project', async () => {
    const cache = await query('container_memory_usage_bytes{container_label_com_docker_compose_service="cache"}');
    expect(cache.map((s) => s.metric.name)).toEqual(['cache']);
    expect(val(cache[0])).toBeGreaterThan((LOAD.memfillFileMiB + LOAD.memfillAnonMiB) * 1024 * 1024 * 0.9);
    const byProject = await query('count by (container_label_com_docker_compose_project) (container_memory_usage_bytes{vm="g"})');
    expect(byProject.map((s) => [s.metric.container_label_com_docker_compose_project, val(s)])).toEqual([['ciel-test', GUEST_CONTAINERS.length]]);
  });

  it('interface and device labels: the net container receives its pings on eth0, the disk container writes', async () => {
    const rx = await query('rate(container_network_receive_bytes_total{name="frontend",interface="eth0"}[10s])');
    expect(rx).toHaveLength(1);
    console.log(`measured: rate(container_network_receive_bytes_total{name="frontend"}[10s]) = ${val(rx[0]).toFixed(0)} B/s`);
    // 5 pings/s of LOAD.netPingBytes payload each way; a loaded TCG host sends fewer, never more
    expect(val(rx[0])).toBeGreaterThan(LOAD.netPingBytes);
    expect(val(rx[0])).toBeLessThan(5 * (LOAD.netPingBytes + 64) * 1.5);
    const wr = await query('rate(container_fs_writes_bytes_total{name="db",device="total"}[10s])');
    expect(wr).toHaveLength(1);
    console.log(`measured: rate(container_fs_writes_bytes_total{name="db"}[10s]) = ${val(wr[0]).toFixed(0)} B/s`);
    // one LOAD.diskKiBPerRound round per second at most
    expect(val(wr[0])).toBeGreaterThan(LOAD.diskKiBPerRound * 1024 * 0.2);
    expect(val(wr[0])).toBeLessThan(LOAD.diskKiBPerRound * 1024 * 1.5);
  });
});
