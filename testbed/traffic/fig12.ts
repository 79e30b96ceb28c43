// The paper's Fig. 12 from a traffic experiment's ticks: (a) CPU, (b) memory, (c) network transmit,
// (d) network receive per container (origin's and replicas', read from outside), (e) the client's
// latency (p50, p99) and throughput, with the scale-out and scale-in marked on every panel.
import { plotSvg, stackSvg, type PlotMarker, type PlotSeries } from '../plot-svg.ts';
import type { ContainerPoint, TrafficTick } from './experiment.ts';

export function fig12Svg(ticks: readonly TrafficTick[], markers: PlotMarker[], originName: string): string {
  const keys = new Map<string, { vm: string; c: string }>();
  for (const t of ticks) for (const [vm, row] of Object.entries(t.vms)) for (const c of Object.keys(row)) keys.set(`${vm}/${c}`, { vm, c });
  const label = (vm: string, c: string) => `${c} (${vm === originName ? 'origin' : vm})`;
  const series = (f: (p: ContainerPoint) => number): PlotSeries[] =>
    [...keys.values()].map(({ vm, c }) => ({
      name: label(vm, c),
      dashed: vm !== originName,
      points: ticks.filter((t) => t.vms[vm]?.[c]).map((t) => [t.t, f(t.vms[vm]![c]!)] as [number, number]),
    }));
  const panel = (title: string, yLabel: string, s: PlotSeries[]) => plotSvg({ title, xLabel: 'time (s)', yLabel, series: s, markers, height: 300 });
  const lat = (k: 'p50' | 'p99') => ticks.filter((t) => t[k] !== undefined).map((t) => [t.t, t[k]! / 1000] as [number, number]);
  return stackSvg('Ciel with real traffic: per-container usage read from outside the VMs, and the client (paper Fig. 12)', [
    panel('(a) CPU', 'vCPUs', series((p) => p.cpu)),
    panel('(b) memory', 'MiB', series((p) => p.mem / 2 ** 20)),
    panel('(c) network transmit', 'KiB/s', series((p) => p.tx / 1024)),
    panel('(d) network receive', 'KiB/s', series((p) => p.rx / 1024)),
    panel('(e) client: latency and throughput', 's  /  requests per s', [
      { name: 'latency p50 (s)', points: lat('p50') },
      { name: 'latency p99 (s)', points: lat('p99') },
      { name: 'answered (req/s)', dashed: true, points: ticks.map((t, i) => [t.t, t.ok / Math.max(0.001, i ? t.t - ticks[i - 1]!.t : 1)] as [number, number]) },
      { name: 'offered rate (req/s)', dashed: true, color: '#7f7f7f', points: ticks.map((t) => [t.t, t.rate] as [number, number]) },
      { name: 'failed (per tick)', color: '#000', points: ticks.map((t) => [t.t, t.failed] as [number, number]) },
    ]),
  ]);
}
