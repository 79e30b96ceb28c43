// `npm run demo`: the paper's autoscaling experiment (sec. 5.5, Fig. 12) on real Docker guests with real
// HTTP traffic, watched from outside (testbed/traffic/experiment.ts). Nothing here sets a container's
// load: the only knob is the client's request rate.
//
//  1. builds the monitor for the bundled guest kernel (ciel build; packages cached) and, once, the Debian
//     12 + Docker guest template (cached in ~/.cache/ciel/docker-guest)
//  2. boots, on a private L2 segment (a network namespace with a bridge): the load-balancer VM (IPVS,
//     direct routing, VIP 10.77.0.100) and the origin VM — a clone of the template running web and db,
//     the VIP on lo — and adds its web container to IPVS
//  3. an open-loop HTTP client in the namespace sends requests to the VIP, each costing CPU in web's CGI;
//     the rate steps up every 30 s
//  4. the controller (VM level: /proc of QEMU; containers: the compiled monitor on the guest's RAM) sees
//     the VM hot, picks web, and starts a replica (--method): `clone` (default) a clone of the template
//     edited offline so only web starts (restart policies), with its own address and the VIP on lo, booted
//     cold; `warm` a warm start: restored from a memory image of a booted web-only VM (saved before the
//     experiment), then given its own MAC, address and VIP over the control channel. IPVS adds it, and
//     from then on round-robin sends it every other request
//  5. with --scale-in (and in the live view) the rate drops: the replica is drained (IPVS weight 0, until
//     no connection is open) and pooled (--release): `pause` (default) paused, `stop` powered off with its
//     disk kept; then the load comes back and the controller scales out again from the pool (the paused
//     replica resumes, the stopped one boots again on its own disk)
//  6. writes the Fig. 12 plot (SVG: per-container CPU, memory, net tx/rx, and the client's latency and
//     throughput, scale-out/in marked) and removes every VM and the namespace (also on Ctrl-C)
//
//   npm run demo                                         live view, scale-out then scale-in
//   npm run demo -- --headless --until-scaled [--scale-in]   one JSON line at the end
//   options: --method clone|warm (the first scale-out; default clone), --release pause|stop (what scale-in
//   does; default pause), --interval MS (controller, default 1000), --work N (CGI iterations per request,
//   default 3000), --plot FILE (default ~/.cache/ciel/demo/ciel-demo.svg; events and ticks go next to it as .jsonl)

import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { cacheDir } from '../common/cache.ts';
import { buildMonitor } from '../compiler/build.ts';
import { timeline, type TimedEvent } from '../controller/scale-out-timeline.ts';
import type { ControllerEvent } from '../controller/types.ts';
import type { PlotMarker } from '../testbed/plot-svg.ts';
import { ensureDockerTemplate } from '../testbed/docker-guest/build.ts';
import { runningByScope } from '../testbed/docker-guest/truth.ts';
import { DEFAULT_WORK, ORIGIN_IP, RELEASE, TrafficExperiment, trafficPolicy, VIP, type TrafficTick } from '../testbed/traffic/experiment.ts';
import { fig12Svg } from '../testbed/traffic/fig12.ts';
import { quantile } from '../testbed/traffic/open-loop.ts';
import type { Acquired } from '../provisioners/provisioner.ts';

const argv = process.argv.slice(2);
const flag = (f: string) => argv.includes(f);
const opt = (f: string) => {
  const i = argv.indexOf(f);
  return i >= 0 ? argv[i + 1] : undefined;
};
if (flag('--help') || flag('-h')) {
  console.log(
    [
      'usage: npm run demo -- [--headless] [--until-scaled] [--scale-in] [--method clone|warm] [--release pause|stop] [--interval MS] [--work N] [--plot FILE]',
      '  --method clone   the first scale-out clones the template and boots the replica cold (default)',
      '  --method warm    it restores the replica from a memory image of a booted web-only VM (saved before the experiment)',
      '  --release pause  scale-in pauses the replica into the pool; the next scale-out resumes it (default)',
      '  --release stop   scale-in powers it off (disk kept); the next scale-out boots it again on its disk',
    ].join('\n'),
  );
  process.exit(0);
}
const choice = <T extends string>(f: string, allowed: readonly T[], dflt: T): T => {
  const v = opt(f) ?? dflt;
  if (!(allowed as readonly string[]).includes(v)) {
    console.error(`${f}: ${v} is not one of ${allowed.join(', ')}`);
    process.exit(2);
  }
  return v as T;
};
const method = choice('--method', ['clone', 'warm'] as const, 'clone');
const releaseMode = choice('--release', ['pause', 'stop'] as const, 'pause');
const headless = flag('--headless');
const scaleIn = flag('--scale-in') || (!headless && !flag('--until-scaled'));
const intervalMs = Number(opt('--interval') ?? 1000);
const work = Number(opt('--work') ?? DEFAULT_WORK);
const plotPath = resolve(opt('--plot') ?? join(cacheDir('demo'), 'ciel-demo.svg'));
/** client rates (requests/s), each held 30 s (the paper raises its rate every 30 s); the last until the decision */
const STEPS = [1, 2, 3, 4, 6, 8, 10];
const STEP_MS = 30_000;
/** after the replica answered its first request: settle, then the "after" window */
const SETTLE_MS = 10_000;
const AFTER_MS = 30_000;
const LOW_RATE = 0.5;
const T0 = Date.now();
const stamp = () => `+${((Date.now() - T0) / 1000).toFixed(1).padStart(5)}s`;
const progress = (l: string) => process.stderr.write(`[demo ${stamp()}] ${l}\n`);
const live = (l: string) => {
  if (!headless) process.stdout.write(`${l}\n`);
};

let x: TrafficExperiment | undefined;
let interrupted = false;
const onSignal = (sig: string) => {
  if (interrupted) return;
  interrupted = true;
  progress(`${sig}: stopping, cleaning up every VM and the namespace`);
  void (x?.close() ?? Promise.resolve()).finally(() => process.exit(130));
};
process.on('SIGINT', () => onSignal('SIGINT'));
process.on('SIGTERM', () => onSignal('SIGTERM'));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));
const hotNow = new Set<string>();
let lastChosen = '';
function describe(t: TimedEvent, s: TrafficExperiment): string | undefined {
  const e: ControllerEvent = t.e;
  const at = `[${s.since(t.at).toFixed(1).padStart(6)}s]`;
  switch (e.type) {
    case 'vm_hot':
      if (hotNow.has(e.vm)) return undefined;
      hotNow.add(e.vm);
      return `${at} ▲ VM ${e.vm} hot (VM level, /proc of QEMU): cpu ${(e.value * 100).toFixed(0)}% > ${(e.threshold * 100).toFixed(0)}%`;
    case 'vm_cool':
      hotNow.delete(e.vm);
      return `${at} ▽ VM ${e.vm} cool again`;
    case 'container_chosen':
      if (lastChosen === `${e.container}/${e.rule}`) return undefined;
      lastChosen = `${e.container}/${e.rule}`;
      return `${at} ● chosen from outside: ${e.container} (${e.rule}, ${e.resource}, score ${e.score.toFixed(2)})`;
    case 'decision':
      return `${at} ■ DECISION ${e.action} ${e.container} ${e.from} → ${e.to} (${e.reason})`;
    case 'scaled_out': {
      const m = methodOf(s, e.replica ?? '');
      const how =
        m === 'clone' ? `clone + offline edit ${Math.round(e.clone_ms ?? 0)} ms, boot to web answering ${Math.round(e.boot_ms ?? 0)} ms`
        : m === 'warm start' ? `warm start: overlay ${Math.round(e.clone_ms ?? 0)} ms, restore + identity fix-up to web answering ${Math.round(e.boot_ms ?? 0)} ms`
        : `${m}, web answering ${Math.round(e.boot_ms ?? 0)} ms after the ${m.includes('resumed') ? 'resume' : 'boot began'}`;
      return `${at} ✔ ${e.replica} added to IPVS for ${e.container} (${how})`;
    }
    case 'scaled_in':
      return `${at} ✔ ${e.replica} drained (no connection left open) and ${releaseMode === 'stop' ? 'powered off (disk kept)' : 'paused'} into the pool`;
    case 'action_failed':
    case 'error':
      return `${at} ✖ ${JSON.stringify(e)}`;
    default:
      return undefined;
  }
}

/** How the provisioner made the replica's latest acquire: what the JSON line and the live view report. */
function methodOf(s: TrafficExperiment, replica: string): string {
  const a = [...s.tracking.acquired].reverse().find((x) => x.vm.name === replica) as (Acquired & { warm?: boolean }) | undefined;
  if (!a) return 'unknown';
  if (a.pooled) return a.reuse === 'boot' ? 'pooled (stopped VM booted)' : 'pooled (paused VM resumed)';
  return a.warm ? 'warm start' : 'clone';
}

const PROVISIONING: Record<string, string> = {
  clone: 'clone of the Docker template (qcow2 overlay) edited offline: restart policies (only web), address, VIP on lo; cold boot',
  'warm start': "warm start: a qcow2 overlay of a saved web-only VM's frozen disk, its memory image restored (QEMU -incoming), then its MAC, address, VIP on lo and clock fixed over the control channel",
  'pooled (paused VM resumed)': 'a paused replica from the pool resumed (QMP cont)',
  'pooled (stopped VM booted)': 'a stopped replica from the pool booted again on its own overlay (only web, its own address)',
};

function tickLine(t: TrafficTick, s: TrafficExperiment): string {
  const f = (n: number | undefined, d = 2) => (n === undefined ? '-' : n.toFixed(d));
  const vms = Object.entries(t.vms)
    .map(([vm, row]) => `${vm === s.originName ? 'origin' : vm}: ${Object.entries(row).map(([c, p]) => `${c} ${f(p.cpu)} vCPU ${(p.mem / 2 ** 20).toFixed(0)} MiB rx ${(p.rx / 1024).toFixed(1)} tx ${(p.tx / 1024).toFixed(1)} KiB/s`).join(', ')}`)
    .join(' | ');
  const failed = s.load.results.filter((r) => !r.ok).length;
  return `[${t.t.toFixed(0).padStart(5)}s] client ${t.rate} req/s: ${t.ok} ok, p50 ${f(t.p50, 0)} p99 ${f(t.p99, 0)} ms, failed so far ${failed} || ${vms}`;
}

async function main(): Promise<void> {
  progress(`building the monitor for ${RELEASE} (ciel build; kernel packages cached)`);
  const b = await buildMonitor({ release: RELEASE, log: (l) => progress(`  ${l}`) });
  progress(`monitor built: ${b.so}`);
  progress('the Debian 12 + Docker guest template (built once, ~6 min; cached in ~/.cache/ciel/docker-guest)');
  const tpl = await ensureDockerTemplate((m) => progress(`  [docker-template] ${m}`));
  progress(`template ${tpl.built ? 'built' : 'cached'}: ${tpl.disk}`);
  x = await TrafficExperiment.setup({
    intervalMs,
    work,
    // 60 s: the replica stays until the "after" window (first answer + 10 s + 30 s) is over even when the
    // decision came at a low rate and the load split in two falls under the target at once
    policy: trafficPolicy({ scaleDownWindowMs: 60_000 }),
    method,
    releaseMode,
    log: progress,
    onEvent: (t) => {
      const line = describe(t, x!);
      if (line) live(line);
    },
    onTick: (t) => live(tickLine(t, x!)),
  });
  const s = x;
  if (interrupted) return;
  live(`\norigin ${s.originName} (${ORIGIN_IP}, web + db, 2 vCPUs, TCG) behind IPVS (VIP ${VIP}, direct routing); client: open loop, CGI work ${work} per request; controller every ${intervalMs} ms\n`);
  s.start();
  await sleep(3_000);

  const decided = () => !!s.find((e) => e.type === 'decision' && e.action === 'scale_out');
  const step = await s.stepRates(STEPS, STEP_MS, decided, 300_000);
  progress(`decision at ${step.rate} req/s; ${method === 'warm' ? 'warm-starting the replica from the saved image' : 'cloning the template and booting the replica (only web; TCG: 1-3 min)'}`);
  const tl = await s.waitFor(() => timeline(s.events, 'web', step.at), 480_000, 'the replica to be added to IPVS');
  const firstServed = await s.waitFor(() => s.firstServed.get(tl.replica), 60_000, 'the first request answered by the replica');
  live(`\nreplica ${tl.replica} (${s.tracking.address(tl.replica)}) answered its first request ${((firstServed - tl.at.detected) / 1000).toFixed(1)} s after the VM turned hot\n`);
  // what runs in the replica, read from its kernel's cgroups while it surely runs (dockerd's API can be
  // slow for minutes under TCG)
  const replicaContainers = await runningByScope(s.replicas.clone(tl.replica)!.guest, s.names);
  const afterFrom = firstServed + SETTLE_MS;
  const afterTo = afterFrom + AFTER_MS;
  await sleep(afterTo - Date.now() + 1_500);
  const firstMethod = methodOf(s, tl.replica);
  const lbBackends = await s.lb.counts();
  const markers: PlotMarker[] = [
    { x: s.since(tl.at.detected), label: 'VM hot', color: '#d62728' },
    { x: s.since(tl.at.decided), label: 'decision', color: '#000' },
    { x: s.since(tl.at.ready), label: 'replica in IPVS', color: '#2ca02c' },
    { x: s.since(firstServed), label: 'first request served by the replica', color: '#17becf' },
  ];

  let scaleInfo: Record<string, unknown> | undefined;
  if (scaleIn) {
    const dropAt = Date.now();
    s.load.setRate(LOW_RATE);
    live(`client rate → ${LOW_RATE} req/s`);
    const ev = await s.waitFor(() => s.find((e) => e.type === 'scaled_in' && e.container === 'web', dropAt), 180_000, 'the scale-in');
    const dec = s.find((e) => e.type === 'decision' && e.action === 'scale_in', dropAt)!;
    markers.push({ x: s.since(ev.at), label: 'scale-in (drained)', color: '#ff7f0e' });
    await sleep(10_000);
    scaleInfo = { scale_in_decided_ms: dec.at - dropAt, scale_in_done_ms: ev.at - dropAt, failed_during_scale_in: s.load.sentIn(dropAt).filter((r) => !r.ok).length };

    // the load comes back: the same controller scales out again, now from the pool (the paused replica
    // resumes, the stopped one boots again on its own disk, with its own address) — the second
    // provisioning method, measured on the same traffic
    const riseAt = Date.now();
    s.load.setRate(step.rate);
    live(`client rate → ${step.rate} req/s (the load comes back)`);
    const again = await s.waitFor(() => timeline(s.events, 'web', riseAt), releaseMode === 'stop' ? 480_000 : 180_000, 'the second scale-out (from the pool)');
    const served2 = await s.waitFor(() => s.firstServed.get(again.replica), 60_000, 'the first request answered by the pooled replica');
    const againMethod = methodOf(s, again.replica);
    markers.push({ x: s.since(again.at.decided), label: `scale-out again (${againMethod})`, color: '#9467bd' });
    await sleep(15_000);
    scaleInfo.second_scale_out = {
      method: againMethod,
      provisioning: PROVISIONING[againMethod],
      clone_ms: Math.round(again.clone_ms),
      replica: again.replica,
      detect_ms: again.detect_ms,
      decide_ms: again.decide_ms,
      resume_or_boot_ms: Math.round(again.boot_ms),
      first_replica_request_ms: served2 - again.at.detected,
      failed: s.load.sentIn(riseAt).filter((r) => !r.ok).length,
    };
  }
  await s.load.stop();

  const before = TrafficExperiment.aloneWindow(step.at, firstServed);
  const lat = (from: number, to: number) => s.load.sentIn(from, to).filter((r) => r.ok).map((r) => r.lat);
  const r1 = (v: number | undefined) => (v === undefined ? null : Math.round(v * 10) / 10);
  const r3 = (v: number | undefined) => (v === undefined ? null : Math.round(v * 1000) / 1000);
  writeFileSync(plotPath, fig12Svg(s.ticks, markers, s.originName));
  const base = plotPath.replace(/\.svg$/, '');
  writeFileSync(`${base}.events.jsonl`, s.events.map((e) => JSON.stringify({ at: e.at, ...e.e })).join('\n') + '\n');
  writeFileSync(`${base}.ticks.jsonl`, s.ticks.map((t) => JSON.stringify(t)).join('\n') + '\n');
  live(`plot: ${plotPath}`);
  const result = {
    scaled: tl.container,
    new_vm: tl.replica,
    new_vm_containers: replicaContainers,
    method: firstMethod,
    provisioning: `${PROVISIONING[firstMethod] ?? firstMethod} (the pool is empty at the first scale-out; scale-in ${releaseMode === 'stop' ? 'powers the replica off into it' : 'pauses the replica into it'})`,
    release: releaseMode,
    detect_ms: tl.detect_ms,
    decide_ms: tl.decide_ms,
    clone_ms: Math.round(tl.clone_ms),
    boot_ms: Math.round(tl.boot_ms),
    ready_ms: tl.ready_ms,
    rate_at_decision: step.rate,
    before_window_s: [r1(s.since(before.from)), r1(s.since(before.to))], // the origin alone at that rate: step + 3 s to the replica's first answer
    requests_ok: s.load.results.filter((r) => r.ok).length,
    requests_failed: s.load.results.filter((r) => !r.ok).length,
    p50_before_ms: r1(quantile(lat(before.from, before.to), 0.5)),
    p99_before_ms: r1(quantile(lat(before.from, before.to), 0.99)),
    p50_after_ms: r1(quantile(lat(afterFrom, afterTo), 0.5)),
    p99_after_ms: r1(quantile(lat(afterFrom, afterTo), 0.99)),
    origin_cpu_before: r3(s.mean(before.from, before.to, (t) => t.vms[s.originName]?.web?.cpu)),
    origin_cpu_after: r3(s.mean(afterFrom, afterTo, (t) => t.vms[s.originName]?.web?.cpu)),
    replica_cpu_after: r3(s.mean(afterFrom, afterTo, (t) => t.vms[tl.replica]?.web?.cpu)),
    first_replica_request_ms: firstServed - tl.at.detected,
    lb_backends: lbBackends,
    plot: plotPath,
    ...(scaleInfo ?? {}),
  };
  await s.close();
  process.stdout.write(JSON.stringify(result) + '\n');
}

try {
  await main();
} catch (e) {
  progress(`failed: ${(e as Error).stack ?? (e as Error).message}`);
  await x?.close();
  process.exit(1);
}
process.exit(0);
