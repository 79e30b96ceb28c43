// Benchmark part A of `npm run bench scaling`: detection-to-decision latency on the real origin VM (the
// test guest, 2 vCPUs, TCG) with web/db/batch running. The controller is the real one (/proc VM-level
// stats, the VMI sampler, PolicyEngine with the demo policy, Autoscaler); provisioner and balancer are
// no-ops, only the decision is timed. web's load steps from 0.05 to 2 vCPUs (cgroup cpu.max).
//
// Three clocks per trial:
//  * step sent: when the host sent the cpu.max write to the guest (the load cannot have risen before;
//    includes the serial round trip and the time the load needs to fill the rate window);
//  * threshold crossed: when the VM's CPU utilisation over a trailing window of one interval (the metric
//    the controller evaluates) first exceeded vmThreshold, from an independent trace: a worker thread
//    reads the QEMU threads' schedstat every 2 ms;
//  * detection (first vm_hot) and decision (the scale_out decision event).
// Target (issue 6): decision <= 100 ms after the threshold is crossed, at 10 Hz.

import { Worker } from 'node:worker_threads';
import { Autoscaler } from '../controller/autoscaler.ts';
import { PolicyEngine } from '../controller/policy.ts';
import type { ControllerEvent } from '../controller/types.ts';
import type { MonitorSampler } from '../controller/monitor-sampler.ts';
import type { ProcVmStats } from '../controller/proc-vm-stats.ts';
import type { Acquired, Vm, VmSpec } from '../provisioners/provisioner.ts';
import type { Guest } from '../testbed/guest/boot.ts';
import { demoPolicy } from '../testbed/scenario.ts';
import { setLoad } from '../testbed/services.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface LatencyRow {
  rate: string;
  baseline: 'kept' | 'on-demand';
  intervalMs: number;
  vmThreshold: number;
  /** per trial, ms */
  crossedToDecision: number[];
  stepToDecision: number[];
  stepToCrossed: number[];
  crossedToDetect: number[];
}

// An independent CPU trace of the QEMU process: every 2 ms, the sum of its threads' schedstat (ns), with
// exited threads kept, as vmstats/qemu-proc-stats.ts sums them. Plain JS in a worker so the controller's
// event loop cannot delay the readings; a copy and not an import of QemuProcStats because tsx's loader
// does not reach worker threads on Node 20 (a .ts worker fails with ERR_UNKNOWN_FILE_EXTENSION).
const TRACER = `
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
const pid = workerData.pid;
const last = new Map();
let exited = 0;
const trace = [];
function read() {
  const seen = new Set();
  let live = 0;
  for (const t of fs.readdirSync('/proc/' + pid + '/task')) {
    let ns;
    try { ns = Number(fs.readFileSync('/proc/' + pid + '/task/' + t + '/schedstat', 'utf8').split(' ')[0]); } catch { continue; }
    seen.add(t); last.set(t, ns); live += ns;
  }
  for (const [t, ns] of last) if (!seen.has(t)) { exited += ns; last.delete(t); }
  trace.push(Date.now(), exited + live);
  if (trace.length > 2 * 20000) trace.splice(0, 2 * 10000);
}
const timer = setInterval(read, 2);
parentPort.on('message', (m) => {
  if (m === 'dump') parentPort.postMessage(trace.slice());
  if (m === 'stop') { clearInterval(timer); parentPort.close(); }
});
`;

class CpuTracer {
  private readonly w: Worker;
  constructor(pid: number) {
    this.w = new Worker(TRACER, { eval: true, workerData: { pid } });
  }
  /** [time ms, cpu ns] pairs */
  async dump(): Promise<[number, number][]> {
    const flat = await new Promise<number[]>((res) => {
      this.w.once('message', res);
      this.w.postMessage('dump');
    });
    const out: [number, number][] = [];
    for (let i = 0; i < flat.length; i += 2) out.push([flat[i]!, flat[i + 1]!]);
    return out;
  }
  async stop(): Promise<void> {
    this.w.postMessage('stop');
    await this.w.terminate();
  }
}

/**
 * First time >= from at which the CPU use over the trailing `windowMs`, per vCPU, exceeds `threshold`
 * (linear interpolation of the counter at the window's start).
 */
export function crossing(trace: [number, number][], from: number, windowMs: number, vcpus: number, threshold: number): number | undefined {
  const at = (t: number): number | undefined => {
    for (let i = 1; i < trace.length; i++) {
      const [t1, c1] = trace[i]!;
      if (t1 >= t) {
        const [t0, c0] = trace[i - 1]!;
        return t1 === t0 ? c1 : c0 + ((c1 - c0) * (t - t0)) / (t1 - t0);
      }
    }
    return undefined;
  };
  for (const [t, c] of trace) {
    if (t < from) continue;
    const c0 = at(t - windowMs);
    if (c0 === undefined) continue;
    if ((c - c0) / (windowMs * 1e6 * vcpus) > threshold) return t;
  }
  return undefined;
}

export async function latencyTrials(
  g: Guest,
  sampler: MonitorSampler,
  vmSource: ProcVmStats,
  vm: string,
  vcpus: number,
  intervalMs: number,
  baseline: 'kept' | 'on-demand',
  trials: number,
  log: (s: string) => void,
): Promise<LatencyRow> {
  const policy = demoPolicy();
  const vmThreshold = policy.policies[0]!.vmThreshold;
  const row: LatencyRow = { rate: `${Math.round(1000 / intervalMs)} Hz`, baseline, intervalMs, vmThreshold, crossedToDecision: [], stepToDecision: [], stepToCrossed: [], crossedToDetect: [] };
  const tracer = new CpuTracer(g.pid);
  try {
    for (let i = 0; i < trials; i++) {
      await setLoad(g, 'web', 0.05);
      const events: { at: number; e: ControllerEvent }[] = [];
      const engine = new PolicyEngine(policy, Date.now);
      const a = new Autoscaler({
        vms: [vm],
        engine,
        vmSource,
        sampler,
        provisioner: {
          acquire: async (spec: VmSpec): Promise<Acquired> => ({ vm: { name: spec.name, spec, state: 'running', disk: '', serialLog: '' } as Vm, pooled: false, clone_ms: 0, boot_ms: 0 }),
          release: async () => {},
        },
        lb: { addBackend: async () => {}, removeBackend: async () => {} },
        specFor: (c, name) => ({ name, container: c, vcpus: 1, memMiB: 256, kernel: '', initrd: '', cmdline: '', disk: 'overlay' }),
        emit: (e) => events.push({ at: Date.now(), e }),
        intervalMs,
        containerBaseline: baseline,
        baselineMs: Math.min(250, intervalMs),
      });
      const ac = new AbortController();
      const loop = a.run(ac.signal);
      try {
        // the VM must read cool (no vm_hot) for 3 consecutive checks before the step
        const end = Date.now() + 30_000;
        for (;;) {
          const last = events.filter((x) => x.e.type === 'vm_check' && x.e.util.cpu !== undefined).slice(-3);
          if (last.length === 3 && last.every((c) => !events.some((h) => h.e.type === 'vm_hot' && h.at === c.at))) break;
          if (Date.now() > end) throw new Error('origin VM did not cool down');
          await sleep(intervalMs / 2);
        }
        await sleep(Math.random() * intervalMs); // a random phase against the controller's ticks
        const { sentAt, rttMs } = await setLoad(g, 'web', 2);
        const deadline = Date.now() + 20_000 + 5 * intervalMs;
        let dec: { at: number } | undefined;
        while (!(dec = events.find((x) => x.at >= sentAt && x.e.type === 'decision'))) {
          if (Date.now() > deadline) throw new Error(`no decision within ${Date.now() - sentAt} ms`);
          await sleep(5);
        }
        await sleep(10); // the tracer's next readings
        const det = events.find((x) => x.at >= sentAt && x.e.type === 'vm_hot') ?? dec;
        const crossed = crossing(await tracer.dump(), sentAt, intervalMs, vcpus, vmThreshold);
        if (crossed === undefined) throw new Error('the CPU trace never crossed the threshold');
        row.crossedToDecision.push(dec.at - crossed);
        row.stepToDecision.push(dec.at - sentAt);
        row.stepToCrossed.push(crossed - sentAt);
        row.crossedToDetect.push(det.at - crossed);
        log(`  ${row.rate} ${baseline}: trial ${i + 1}: step→crossed ${crossed - sentAt} ms, crossed→detect ${det.at - crossed} ms, crossed→decision ${dec.at - crossed} ms, step→decision ${dec.at - sentAt} ms (serial rtt ${rttMs.toFixed(0)} ms)`);
      } finally {
        ac.abort();
        await loop;
        await setLoad(g, 'web', 0.05);
      }
      await sleep(1500);
    }
  } finally {
    await tracer.stop();
  }
  return row;
}
