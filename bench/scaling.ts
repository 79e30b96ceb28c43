// Benchmark: the fine-grained autoscaler (paper sec. 5.3-5.5, Table 1 / Fig. 10).
//
// A. Detection-to-decision latency on the real origin VM (test guest, 2 vCPUs, TCG) with web/db/batch:
//    the controller (real /proc VM-level stats, real VMI sampler, PolicyEngine, Autoscaler; provisioner and
//    balancer are no-ops here, only the decision is timed) runs at 10 Hz and at 1 Hz; web's load steps from
//    0.05 to 2 vCPUs (unthrottled busy loops). Latency = decision event − the moment the step command was
//    *sent* to the guest (the load cannot have risen before: an upper bound). Variants: "on demand" (the
//    container level is sampled only once the VM is hot: a baseline sample, a wait of one interval (10 Hz)
//    or 250 ms (1 Hz), and a second sample) and "kept baseline" (one VMI sample per VM-level tick kept as
//    the baseline, ~0.3 ms each, so the first hot tick decides at once).
// B. Scale-out time split into clone and boot (until the ready line of the one container) with the
//    QEMU-direct provisioner, minimal VM (1 vCPU, 256 MiB, web only): qcow2 overlay clone, sparse-copy
//    clone, pooled reuse of a paused VM (resume) and of a stopped VM (boot, no clone), warm start (restore
//    of a saved memory image of a booted minimal VM + identity fix-up) when the provisioner offers it, and
//    the traditional whole-VM clone: a full copy of a whole VM's 128 MiB disk + booting the whole test guest
//    (2 vCPUs, 512 MiB) until all three services run. Ratios are to the traditional clone+boot.
//    Measured with no origin load running (the host's 2 cores are otherwise shared with other work).

import { execFileSync } from 'node:child_process';
import { existsSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildMonitor, GENERATED } from '../compiler/build.ts';
import { cacheDir } from '../runtime/cache.ts';
import { Autoscaler, type ContainerSampler, type VmStatsSource } from '../runtime/controller/autoscaler.ts';
import { PolicyEngine } from '../runtime/controller/policy.ts';
import type { ControllerEvent } from '../runtime/controller/types.ts';
import { MonitorSampler, ProcVmStats } from '../runtime/controller/wiring.ts';
import { ensureTestGuest } from '../runtime/provisioners/guest.ts';
import type { Acquired, Vm, VmSpec } from '../runtime/provisioners/provisioner.ts';
import { QemuDirectProvisioner } from '../runtime/provisioners/qemu-direct.ts';
import type { Sample } from '../runtime/sample.ts';
import { bootGuest, type Guest } from '../test/guest/boot.ts';
import { demoPolicy, ORIGIN_MEM_MIB, ORIGIN_VCPUS, RELEASE } from '../test/e2e/scenario.ts';
import { serviceNames, setLoad, startServices } from '../test/e2e/services.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2) : NaN;
};

export interface LatencyRow {
  rate: string;
  variant: string;
  intervalMs: number;
  trials: number;
  /** step sent → decision, ms */
  decide: number[];
  /** step sent → first vm_hot, ms */
  detect: number[];
  /** step command returned from the guest (the load was certainly on) → decision, ms: a lower bound */
  decideFromReturn: number[];
  vmThreshold: number;
}

export interface ScaleOutRow {
  method: string;
  clone_ms: number;
  boot_ms: number;
  total_ms: number;
  note?: string;
}

/** Keeps a container-level baseline: each VM-level tick primes the engine with the previous tick's sample. */
class KeptBaseline implements VmStatsSource {
  private prev?: Sample;
  constructor(
    private readonly inner: VmStatsSource,
    private readonly sampler: ContainerSampler,
    private readonly engine: PolicyEngine,
  ) {}
  async vmStats(vm: string) {
    const st = await this.inner.vmStats(vm);
    if (this.prev) this.engine.primeContainers(this.prev);
    this.prev = await this.sampler.sample(vm);
    return st;
  }
}

async function latencyTrials(
  g: Guest,
  sampler: MonitorSampler,
  vmSource: ProcVmStats,
  vm: string,
  intervalMs: number,
  kept: boolean,
  vmThreshold: number,
  trials: number,
  log: (s: string) => void,
): Promise<LatencyRow> {
  const row: LatencyRow = { rate: `${Math.round(1000 / intervalMs)} Hz`, variant: kept ? 'kept baseline' : 'on demand', intervalMs, trials, decide: [], detect: [], decideFromReturn: [], vmThreshold };
  const base = demoPolicy();
  const policy = { ...base, policies: base.policies.map((p) => ({ ...p, vmThreshold })) };
  for (let i = 0; i < trials; i++) {
    await setLoad(g, 'web', 0.05);
    const events: { at: number; e: ControllerEvent }[] = [];
    const engine = new PolicyEngine(policy, Date.now);
    const source = kept ? new KeptBaseline(vmSource, sampler, engine) : vmSource;
    const a = new Autoscaler({
      vms: [vm],
      engine,
      vmSource: source,
      sampler,
      provisioner: {
        acquire: async (spec: VmSpec): Promise<Acquired> => ({ vm: { name: spec.name, spec, state: 'running', disk: '', serialLog: '' } as Vm, pooled: false, clone_ms: 0, boot_ms: 0 }),
        release: async () => {},
      },
      lb: { addBackend: async () => {}, removeBackend: async () => {} },
      specFor: (c, name) => ({ name, container: c, vcpus: 1, memMiB: 256, kernel: '', initrd: '', cmdline: '', disk: 'overlay' }),
      emit: (e) => events.push({ at: Date.now(), e }),
      intervalMs,
      baselineMs: Math.min(250, intervalMs),
    });
    const ac = new AbortController();
    const loop = a.run(ac.signal);
    // the VM must read cool (no vm_hot) for 3 consecutive checks before the step
    const cool = async () => {
      const end = Date.now() + 30_000;
      for (;;) {
        const checks = events.filter((x) => x.e.type === 'vm_check' && x.e.util.cpu !== undefined);
        const last = checks.slice(-3);
        if (last.length === 3 && last.every((c) => !events.some((h) => h.e.type === 'vm_hot' && h.at === c.at))) return;
        if (Date.now() > end) throw new Error('origin VM did not cool down');
        await sleep(intervalMs / 2);
      }
    };
    try {
      await cool();
      await sleep(Math.random() * intervalMs); // a random phase against the controller's ticks
      const { sentAt, rttMs } = await setLoad(g, 'web', 2);
      const returnedAt = sentAt + rttMs;
      const end = Date.now() + 20_000 + 5 * intervalMs;
      let dec: { at: number } | undefined;
      while (!(dec = events.find((x) => x.at >= sentAt && x.e.type === 'decision'))) {
        if (Date.now() > end) throw new Error(`no decision within ${end - sentAt} ms`);
        await sleep(5);
      }
      const det = events.find((x) => x.at >= sentAt && x.e.type === 'vm_hot');
      row.decide.push(dec.at - sentAt);
      row.detect.push((det?.at ?? dec.at) - sentAt);
      row.decideFromReturn.push(Math.round(dec.at - returnedAt));
      log(`  ${row.rate} ${row.variant} (VM trigger ${vmThreshold}): trial ${i + 1}: detect ${row.detect.at(-1)} ms, decide ${row.decide.at(-1)} ms (${row.decideFromReturn.at(-1)} ms after the command returned; rtt ${rttMs.toFixed(0)} ms)`);
    } finally {
      ac.abort();
      await loop;
      await setLoad(g, 'web', 0.05);
    }
    await sleep(1500);
  }
  return row;
}

export async function benchScaling(
  log: (s: string) => void = console.log,
  o: { trials?: number; reps?: number; parts?: ('latency' | 'scaleout')[] } = {},
): Promise<{ latency: LatencyRow[]; scaleOut: ScaleOutRow[] }> {
  const trials = o.trials ?? 5;
  const reps = o.reps ?? 3;
  const parts = o.parts ?? ['latency', 'scaleout'];
  if (!existsSync(join(GENERATED, RELEASE, 'monitor.so'))) await buildMonitor({ release: RELEASE });
  const progress = (s: string) => process.stderr.write(`[bench scaling] ${s}\n`);

  // ---------------------------------------------------------------- A. latency
  const latency: LatencyRow[] = [];
  if (parts.includes('latency')) {
    const name = `bench-scaling-${process.pid}`;
    const g = await bootGuest({ name, bare: true, memMiB: ORIGIN_MEM_MIB, smp: ORIGIN_VCPUS, log: progress });
    const sampler = new MonitorSampler();
    try {
      await startServices(g);
      await sampler.attach(name, { qmpSocket: g.qmpSocket, memFile: g.memFile, release: RELEASE, names: serviceNames() });
      const vmSource = new ProcVmStats().add({ name, pid: g.pid, vcpus: ORIGIN_VCPUS, memMiB: ORIGIN_MEM_MIB });
      const vmThr = demoPolicy().policies[0]!.vmThreshold;
      for (const [intervalMs, kept, thr] of [
        [100, false, vmThr],
        [100, true, vmThr],
        [100, true, 0.25],
        [50, true, 0.25],
        [1000, false, vmThr],
        [1000, true, vmThr],
      ] as const) {
        latency.push(await latencyTrials(g, sampler, vmSource, name, intervalMs, kept, thr, trials, progress));
      }
      const us = sampler.stats.samples ? sampler.stats.totalUs / sampler.stats.samples : 0;
      const pus = sampler.stats.samples ? sampler.stats.pausedUs / sampler.stats.samples : 0;
      log(`Detection-to-decision latency (origin: test guest, 2 vCPUs, TCG; web 0.05 → 2 vCPUs; ${trials} trials each; one VMI sample reads guest memory for ${us.toFixed(0)} us, the guest paused around it ${(pus / 1000).toFixed(1)} ms)`);
      log('(times from the moment the load step was sent; "after return": from when the guest acknowledged it, a lower bound)');
      log('rate   container level  VM trigger  detect median (min-max) ms  decision median (min-max) ms  after return  target <= 100 ms (>= 10 Hz)');
      for (const r of latency) {
        const mm = (xs: number[]) => `${median(xs).toFixed(0).padStart(5)} (${Math.min(...xs)}-${Math.max(...xs)})`.padEnd(28);
        log(
          `${r.rate.padEnd(6)} ${r.variant.padEnd(16)} ${r.vmThreshold.toFixed(2).padStart(10)}  ${mm(r.detect)} ${mm(r.decide)}  ${median(r.decideFromReturn).toFixed(0).padStart(11)}  ` +
            `${r.intervalMs <= 100 ? (median(r.decide) <= 100 ? 'met' : median(r.decideFromReturn) <= 100 ? 'met from return only' : 'missed') : ''}`,
        );
      }
    } finally {
      await sampler.close();
      await g.stop();
    }
    log('');
  }

  // ---------------------------------------------------------------- B. scale-out times
  let rows: ScaleOutRow[] = [];
  if (parts.includes('scaleout')) {
    const guest = await ensureTestGuest();
    const dir = cacheDir('bench-scaling', String(process.pid));
    const prov = new QemuDirectProvisioner({ template: guest.template, dir });
    const spec = (n: string, disk: VmSpec['disk'] = 'overlay'): VmSpec => ({
      name: n,
      container: 'web',
      vcpus: 1,
      memMiB: 256,
      kernel: guest.kernel,
      initrd: guest.initrd,
      cmdline: guest.cmdline('web'),
      disk,
    });
    const samples = new Map<string, { clone: number[]; boot: number[]; note?: string }>();
    const add = (method: string, clone: number, boot: number, note?: string) => {
      const m = samples.get(method) ?? { clone: [], boot: [] };
      m.clone.push(clone);
      m.boot.push(boot);
      if (note) m.note = note;
      samples.set(method, m);
    };
    const M = {
      overlay: 'overlay clone (qcow2 backing file)',
      sparse: 'sparse-copy clone',
      paused: 'pooled reuse, paused VM (resume)',
      stopped: 'pooled reuse, stopped VM (boot)',
      warm: 'warm start (restore saved memory + fix-up)',
      trad: 'traditional: whole-VM clone (3 services)',
    };
    try {
      for (let rep = 1; rep <= reps; rep++) {
        progress(`rep ${rep}/${reps}: overlay clone + boot`);
        const a = await prov.cloneFromTemplate(spec(`bench-ovl-${rep}`));
        const ab = await prov.start(a.vm);
        add(M.overlay, a.clone_ms, ab.boot_ms);

        progress(`rep ${rep}/${reps}: sparse-copy clone + boot`);
        const b = await prov.cloneFromTemplate(spec(`bench-sparse-${rep}`, 'sparse-copy'));
        const bb = await prov.start(b.vm);
        add(M.sparse, b.clone_ms, bb.boot_ms);
        await prov.destroy(b.vm);

        progress(`rep ${rep}/${reps}: pooled reuse (paused → resume)`);
        await prov.release(a.vm, 'pause');
        const p = await prov.acquire(spec(`bench-pool-${rep}`));
        if (p.reuse !== 'resume') throw new Error(`expected a resumed pooled VM, got ${p.reuse}`);
        add(M.paused, p.clone_ms, p.boot_ms);

        progress(`rep ${rep}/${reps}: pooled reuse (stopped → boot)`);
        await prov.release(p.vm, 'stop');
        const q = await prov.acquire(spec(`bench-pool-${rep}`));
        if (q.reuse !== 'boot') throw new Error(`expected a booted pooled VM, got ${q.reuse}`);
        add(M.stopped, q.clone_ms, q.boot_ms);
        await prov.destroy(q.vm);
      }

      // warm start: only when the provisioner offers it (saveWarmImage / warmStart)
      const w = prov as unknown as {
        saveWarmImage?: (vm: Vm, file: string) => Promise<{ image: unknown; save_ms: number; bytes: number }>;
        warmStart?: (spec: VmSpec, image: unknown, id?: { containers?: string[] }) => Promise<Acquired & { restore_ms: number; fixup_ms: number }>;
      };
      if (typeof w.saveWarmImage === 'function' && typeof w.warmStart === 'function') {
        try {
          progress('warm start: boot a warm template, save its memory, restore clones');
          const tpl = await prov.cloneFromTemplate({ ...spec('bench-warm-tpl'), cmdline: guest.cmdline('web', { warm: true } as never), ready: 'CIEL-WARM-READY' });
          await prov.start(tpl.vm);
          const img = join(dir, 'warm.img');
          const saved = await w.saveWarmImage(tpl.vm, img);
          await prov.destroy(tpl.vm);
          const restores: number[] = [];
          const fixups: number[] = [];
          for (let rep = 1; rep <= reps; rep++) {
            const r = await w.warmStart(spec(`bench-warm-${rep}`), saved.image, { containers: ['web'] });
            restores.push(r.restore_ms);
            fixups.push(r.fixup_ms);
            add(M.warm, r.clone_ms, r.boot_ms);
            await prov.destroy(r.vm);
          }
          samples.get(M.warm)!.note = `restore ${median(restores).toFixed(0)} ms + fix-up ${median(fixups).toFixed(0)} ms (fix-ups ${fixups.map((x) => x.toFixed(0)).join('/')}); image ${(saved.bytes / 2 ** 20).toFixed(0)} MiB, saved once in ${saved.save_ms.toFixed(0)} ms`;
        } catch (e) {
          samples.set(M.warm, { clone: [NaN], boot: [NaN], note: `failed: ${(e as Error).message.slice(0, 160)}` });
        }
      } else {
        samples.set(M.warm, { clone: [NaN], boot: [NaN], note: 'not offered by this provisioner build' });
      }
    } finally {
      await prov.close();
      rmSync(dir, { recursive: true, force: true });
    }

    // traditional: copy a whole VM's disk, boot the whole VM with all three services
    const tdir = cacheDir('bench-scaling', `trad-${process.pid}`);
    try {
      const src = join(tdir, 'whole-vm.raw');
      writeFileSync(src, '');
      truncateSync(src, 128 * 1024 * 1024);
      execFileSync('dd', ['if=/dev/urandom', `of=${src}`, 'bs=1M', 'count=128', 'conv=notrunc', 'status=none']);
      for (let rep = 1; rep <= reps; rep++) {
        progress(`rep ${rep}/${reps}: traditional whole-VM clone: full disk copy + boot of the whole test guest + services`);
        const dst = join(tdir, 'clone.raw');
        rmSync(dst, { force: true });
        const t0 = performance.now();
        execFileSync('cp', ['--sparse=never', src, dst]);
        execFileSync('sync', [dst]);
        const clone_ms = performance.now() - t0;
        const t1 = performance.now();
        const whole = await bootGuest({ name: `bench-whole-${process.pid}-${rep}`, bare: true, memMiB: ORIGIN_MEM_MIB, smp: ORIGIN_VCPUS, log: () => {} });
        try {
          await startServices(whole);
        } finally {
          await whole.stop();
        }
        add(M.trad, clone_ms, performance.now() - t1, 'full copy of a 128 MiB disk; whole test guest, 2 vCPUs, 512 MiB, until web+db+batch run');
      }
    } finally {
      rmSync(tdir, { recursive: true, force: true });
    }
    rows = [...samples.entries()].map(([method, m]) => {
      const clone_ms = median(m.clone);
      const boot_ms = median(m.boot);
      return { method, clone_ms, boot_ms, total_ms: median(m.clone.map((c, i) => c + m.boot[i]!)), note: m.note };
    });

    const trad = rows.find((r) => r.method === M.trad)!.total_ms;
    log(`Scale-out time (QEMU-direct, TCG; minimal VM = 1 vCPU, 256 MiB, web only, until its ready line; median of ${reps})`);
    log('method                                        clone ms   boot ms   total ms   vs traditional');
    for (const r of rows) {
      const f = (x: number) => (Number.isFinite(x) ? x.toFixed(x < 10 ? 1 : 0) : '-').padStart(9);
      const ratio = Number.isFinite(r.total_ms) ? `${((r.total_ms / trad) * 100).toFixed(r.total_ms / trad < 0.01 ? 3 : 1)}%` : '-';
      log(`${r.method.padEnd(45)} ${f(r.clone_ms)} ${f(r.boot_ms)}  ${f(r.total_ms)}   ${ratio.padStart(8)}${r.note ? `   ${r.note}` : ''}`);
    }
  }
  return { latency, scaleOut: rows };
}

// `tsx bench/scaling.ts [latency|scaleout] [--trials N] [--reps N]` runs it alone.
if (process.argv[1] && import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const num = (f: string) => (args.includes(f) ? Number(args[args.indexOf(f) + 1]) : undefined);
  const parts = args.filter((x) => x === 'latency' || x === 'scaleout') as ('latency' | 'scaleout')[];
  await benchScaling(console.log, { trials: num('--trials'), reps: num('--reps'), parts: parts.length ? parts : undefined });
  process.exit(0);
}
