// `npm run demo`: Ciel's autoscaling scenario on real VMs (QEMU, TCG), watched from outside.
//
//  1. builds the monitor for the bundled guest kernel (ciel build; packages cached)
//  2. boots the origin VM (test guest) with three services, web, db and batch, in Docker cgroup layouts
//  3. raises web's CPU load step by step; the controller sees the VM hot at VM level (/proc of QEMU),
//     samples the containers from outside (compiled VMI monitor on the guest's RAM), picks web and
//     decides to scale it out
//  4. the QEMU-direct provisioner clones (qcow2 overlay) and boots a minimal VM that runs only web, on a
//     private bridge in a network namespace; it is registered with the load balancer, which then splits
//     requests
//  5. prints the timeline (detect/decide/clone/boot/ready), writes an SVG plot of per-container CPU with the
//     scale-out marked (like the paper's Fig. 12), and cleans up every VM and the namespace
//
//   npm run demo                                   live view (scale-out, balancer split, scale-in)
//   npm run demo -- --headless --until-scaled      no live view, one final JSON line
//   npm run demo -- --headless --until-scaled --scale-in    ... and the scale-in back to the pool
//   options: --interval MS (controller, default 500), --plot FILE (default ~/.cache/ciel/demo/ciel-demo.svg;
//   the controller's events go next to it as JSON lines, .events.jsonl)

import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { cacheDir } from '../common/cache.ts';
import { buildMonitor } from '../compiler/build.ts';
import type { ControllerEvent } from '../controller/types.ts';
import type { TimedEvent } from '../controller/scale-out-timeline.ts';
import { plotSvg, type PlotMarker, type PlotSeries } from '../testbed/plot-svg.ts';
import { RELEASE, Scenario, type Tick } from '../testbed/scenario.ts';

const argv = process.argv.slice(2);
const flag = (f: string) => argv.includes(f);
const opt = (f: string) => {
  const i = argv.indexOf(f);
  return i >= 0 ? argv[i + 1] : undefined;
};
if (flag('--help') || flag('-h')) {
  console.log('usage: npm run demo -- [--headless] [--until-scaled] [--scale-in] [--interval MS] [--plot FILE]');
  process.exit(0);
}
const headless = flag('--headless');
// the live demo shows the whole story (scale-out, then scale-in); headless stops after the scale-out unless --scale-in
const scaleIn = flag('--scale-in') || (!headless && !flag('--until-scaled'));
const intervalMs = Number(opt('--interval') ?? 500);
const plotPath = resolve(opt('--plot') ?? join(cacheDir('demo'), 'ciel-demo.svg'));
const T0 = Date.now();
const stamp = () => `+${((Date.now() - T0) / 1000).toFixed(1).padStart(5)}s`;
// progress goes to stderr (always: long steps must show life); the live view to stdout
const progress = (l: string) => process.stderr.write(`[demo ${stamp()}] ${l}\n`);
const live = (l: string) => {
  if (!headless) process.stdout.write(`${l}\n`);
};

let scenario: Scenario | undefined;
let interrupted = false;
const onSignal = (sig: string) => {
  if (interrupted) return;
  interrupted = true;
  progress(`${sig}: stopping, cleaning up every VM and the namespace`);
  void (scenario?.close() ?? Promise.resolve()).finally(() => process.exit(130));
};
process.on('SIGINT', () => onSignal('SIGINT'));
process.on('SIGTERM', () => onSignal('SIGTERM'));

function pct(x: number | undefined): string {
  return x === undefined ? '   -  ' : `${x.toFixed(0).padStart(4)}%`;
}

const hotNow = new Set<string>();
let lastChosen = '';
function describe(t: TimedEvent, s: Scenario): string | undefined {
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
    case 'containers_sampled':
      return `${at}   containers sampled from outside (VMI): ${Object.entries(e.util)
        .map(([k, u]) => `${k} ${u.cpu === undefined ? '-' : (u.cpu * 100).toFixed(0) + '%'}`)
        .join(', ')} of the VM`;
    case 'container_chosen':
      // once per (container, rule) streak: the engine re-chooses every sample while the VM is hot
      if (lastChosen === `${e.container}/${e.rule}`) return undefined;
      lastChosen = `${e.container}/${e.rule}`;
      return `${at} ● chosen: ${e.container} (${e.rule}, ${e.resource}, score ${e.score.toFixed(2)})`;
    case 'no_choice':
      if (lastChosen === 'none') return undefined;
      lastChosen = 'none';
      return `${at} ○ VM hot, no container carries ${(e.min_share * 100).toFixed(0)}% of its ${e.resource} (${e.candidates.map((c) => `${c.container} ${(c.share * 100).toFixed(0)}%`).join(', ') || 'none'}): nothing to scale out`;
    case 'decision':
      return `${at} ■ DECISION ${e.action} ${e.container} ${e.from} → ${e.to} (${e.reason})`;
    case 'scaled_out':
      return `${at} ✔ ${e.replica} serves ${e.container} (${e.pooled ? 'from the pool' : 'new clone'}; clone ${Math.round(e.clone_ms ?? 0)} ms, boot ${Math.round(e.boot_ms ?? 0)} ms)`;
    case 'scaled_in':
      return `${at} ✔ ${e.replica} drained and returned to the pool`;
    case 'action_failed':
    case 'error':
      return `${at} ✖ ${JSON.stringify(e)}`;
    case 'cooldown_skip':
    case 'stabilization_hold':
    case 'tolerance_skip':
      return undefined;
    default:
      return undefined;
  }
}

function tickLine(t: Tick): string {
  const reps = Object.entries(t.replicas)
    .map(([n, v]) => `${n} ${pct(v)}`)
    .join(' ');
  return `[${t.t.toFixed(1).padStart(6)}s] web ${pct(t.cpu.web)}  db ${pct(t.cpu.db)}  batch ${pct(t.cpu.batch)}  | origin QEMU ${pct(t.originVm)}${reps ? `  | replica ${reps}` : ''}   (sample ${t.sample_us} us)`;
}

function writePlot(s: Scenario, markers: PlotMarker[]): string {
  const names = ['web', 'db', 'batch'];
  const series: PlotSeries[] = names.map((n) => ({ name: `${n} (VMI, origin)`, points: s.ticks.filter((t) => t.cpu[n] !== undefined).map((t) => [t.t, t.cpu[n]!] as [number, number]) }));
  series.push({ name: 'origin VM (QEMU host CPU)', dashed: true, color: '#7f7f7f', points: s.ticks.map((t) => [t.t, t.originVm] as [number, number]) });
  const repNames = [...new Set(s.ticks.flatMap((t) => Object.keys(t.replicas)))];
  for (const r of repNames) {
    series.push({ name: `${r} (QEMU host CPU)`, dashed: true, color: '#9467bd', points: s.ticks.filter((t) => t.replicas[r] !== undefined).map((t) => [t.t, t.replicas[r]!] as [number, number]) });
  }
  const svg = plotSvg({
    title: 'Ciel: per-container CPU seen from outside the VM, and the scale-out of web',
    xLabel: 'time (s)',
    yLabel: 'CPU (% of one vCPU / host core)',
    series,
    markers,
    hlines: [{ y: 0.45 * 200, label: 'web container threshold (45% of the 2-vCPU VM)', color: '#d62728' }],
  });
  writeFileSync(plotPath, svg);
  writeFileSync(plotPath.replace(/\.svg$/, '') + '.events.jsonl', s.events.map((x) => JSON.stringify(x.e)).join('\n') + '\n');
  return plotPath;
}

async function main(): Promise<void> {
  progress(`building the monitor for ${RELEASE} (ciel build; kernel packages cached)`);
  const b = await buildMonitor({ release: RELEASE, log: (l) => progress(`  ${l}`) });
  progress(`monitor built: ${b.so} (${b.manifest.coverage.loads} guest loads instrumented, ${b.slots.length} kernel symbols)`);
  scenario = await Scenario.setup({
    intervalMs,
    log: progress,
    onEvent: (t) => {
      const line = describe(t, scenario!);
      if (line) live(line);
    },
    onTick: (t) => live(tickLine(t)),
  });
  const s = scenario;
  if (interrupted) return;
  live(`\norigin VM ${s.originName} (2 vCPUs, TCG) runs web, db, batch; controller every ${intervalMs} ms; balancer: ${s.lb.kind ?? 'load balancer'}\n`);
  s.start();
  await new Promise((r) => setTimeout(r, 1500));

  // 1. rising load at web until the controller decides
  const { crossedAt } = await s.rampWeb({ timeoutMs: 60_000 });
  progress('decision made; cloning and booting the minimal VM for web (TCG boot: ~10-40 s)');
  const tl = await s.waitFor(() => s.timeline('web', crossedAt), 180_000, 'the new VM to serve web');
  const containers = s.replicaContainers(tl.replica);
  const addr = s.replicaAddress(tl.replica);
  live(`\nnew minimal VM ${tl.replica}${addr ? ` at ${addr}` : ''} runs only: ${containers.join(', ') || '?'} (its console)`);
  live(
    `timeline: detect ${tl.detect_ms} ms → decide ${tl.decide_ms} ms → clone ${Math.round(tl.clone_ms)} ms → boot ${Math.round(tl.boot_ms)} ms; ` +
      `ready ${tl.ready_ms} ms after the load crossed the threshold\n`,
  );

  // 2. the balancer now sends part of web's requests to the replica: the origin's share halves
  await s.setLoad('web', 0.7);
  const split = await s.lb.drive('web', 40);
  live(`load balancer (${s.lb.kind}): 40 requests to web → replies by backend ${JSON.stringify(split)}`);
  await new Promise((r) => setTimeout(r, 3 * intervalMs + 1000));
  const markers: PlotMarker[] = [
    { x: s.since(tl.at.crossed), label: 'load > threshold', color: '#d62728' },
    { x: s.since(tl.at.decided), label: `decision (+${tl.detect_ms + tl.decide_ms} ms)`, color: '#000' },
    { x: s.since(tl.at.ready), label: `replica ready (+${(tl.ready_ms / 1000).toFixed(1)} s)`, color: '#2ca02c' },
  ];

  // 3. optional scale-in: web's load drops; after the stabilisation window the replica goes back to the pool
  let scaleInfo: Record<string, unknown> | undefined;
  if (scaleIn) {
    const dropAt = await s.setLoad('web', 0.05);
    live('load: web → 0.05 vCPU');
    const ev = await s.waitFor(() => s.find((e) => e.type === 'scaled_in' && e.container === 'web', dropAt), 90_000, 'the scale-in');
    const dec = s.find((e) => e.type === 'decision' && e.action === 'scale_in', dropAt)!;
    markers.push({ x: s.since(ev.at), label: 'scale-in: back to pool', color: '#ff7f0e' });
    scaleInfo = {
      decided_ms: dec.at - dropAt,
      pooled_ms: ev.at - dropAt,
      pool: s.prov.pooled().map((v) => ({ name: v.name, state: v.state })),
    };
    await new Promise((r) => setTimeout(r, 2 * intervalMs));
  }

  const plot = writePlot(s, markers);
  live(`plot: ${plot}`);
  const result = {
    scaled: tl.container,
    new_vm: tl.replica,
    new_vm_containers: containers,
    detect_ms: tl.detect_ms,
    decide_ms: tl.decide_ms,
    clone_ms: Math.round(tl.clone_ms),
    boot_ms: Math.round(tl.boot_ms),
    ready_ms: tl.ready_ms,
    lb_backends: await s.lb.counts(),
    plot,
    lb: s.lb.kind,
    ...(scaleInfo ? { scale_in: scaleInfo } : {}),
  };
  await s.close();
  process.stdout.write(JSON.stringify(result) + '\n');
}

try {
  await main();
} catch (e) {
  progress(`failed: ${(e as Error).stack ?? (e as Error).message}`);
  await scenario?.close();
  process.exit(1);
}
process.exit(0);
