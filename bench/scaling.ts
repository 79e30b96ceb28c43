// Benchmark: the fine-grained autoscaler (paper sec. 5.3-5.5, Table 1 / Fig. 10).
//
// A. Detection-to-decision latency (bench/scaling-latency.ts): the real controller on the origin VM at
//    10 Hz, 20 Hz and 1 Hz, with the container baseline kept (the default) or taken on demand.
// B. Scale-out time split into clone and boot (until the ready line of the one container) with the
//    QEMU-direct provisioner, minimal VM (1 vCPU, 256 MiB, web only): qcow2 overlay clone, sparse-copy
//    clone, pooled reuse of a paused VM (resume) and of a stopped VM (boot, no clone), warm start (restore
//    of a saved memory image of a booted minimal VM + identity fix-up) when the provisioner offers it, and
//    the traditional whole-VM clone: a full copy of a whole VM's 128 MiB disk + booting the whole test guest
//    (2 vCPUs, 512 MiB) until all three services run. Ratios are to the traditional clone+boot. Then the
//    libvirt provisioner's overlay clone, paused-pool resume and warm start (bench/scaling-libvirt.ts).
//    Measured with no origin load running (the host's 2 cores are otherwise shared with other work).

import { execFileSync } from 'node:child_process';
import { existsSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { hasBuild } from '../common/build-artifact.ts';
import { buildMonitor } from '../compiler/build.ts';
import { cacheDir } from '../common/cache.ts';
import { MonitorSampler } from '../controller/monitor-sampler.ts';
import { ProcVmStats } from '../controller/proc-vm-stats.ts';
import { ensureTestGuest } from '../testbed/minimal-guest.ts';
import type { Acquired, Vm, VmSpec } from '../provisioners/provisioner.ts';
import { QemuDirectProvisioner } from '../provisioners/qemu-direct.ts';
import { bootGuest } from '../testbed/guest/boot.ts';
import { ORIGIN_MEM_MIB, ORIGIN_VCPUS, RELEASE } from '../testbed/scenario.ts';
import { latencyTrials, type LatencyRow } from './scaling-latency.ts';
import { benchLibvirtScaleOut } from './scaling-libvirt.ts';
import { median, ScaleOutSamples, type ScaleOutRow } from './scale-out-rows.ts';
import { serviceNames, startServices } from '../testbed/services.ts';


/** (interval ms, container baseline) of the latency rows */
const LATENCY_ROWS = [
  [100, 'on-demand'],
  [100, 'kept'],
  [50, 'kept'],
  [1000, 'on-demand'],
  [1000, 'kept'],
] as const;

export async function benchScaling(
  log: (s: string) => void = console.log,
  o: { trials?: number; reps?: number; parts?: ('latency' | 'scaleout')[]; latencyRows?: (readonly [number, 'kept' | 'on-demand'])[] } = {},
): Promise<{ latency: LatencyRow[]; scaleOut: ScaleOutRow[] }> {
  const trials = o.trials ?? 9;
  const reps = o.reps ?? 3;
  const parts = o.parts ?? ['latency', 'scaleout'];
  if (!hasBuild(RELEASE)) await buildMonitor({ release: RELEASE });
  const progress = (s: string) => process.stderr.write(`[bench scaling] ${s}\n`);

  // ---------------------------------------------------------------- A. latency
  const latency: LatencyRow[] = [];
  if (parts.includes('latency')) {
    const name = `bench-scaling-${process.pid}`;
    const g = await bootGuest({ name, bare: true, memMiB: ORIGIN_MEM_MIB, smp: ORIGIN_VCPUS, log: progress });
    const sampler = new MonitorSampler();
    try {
      await startServices(g);
      await sampler.attach({ name, backend: 'qemu', qmp: g.qmpSocket, memory: g.memFile, kernel: RELEASE }, { names: serviceNames() });
      const vmSource = new ProcVmStats().add({ name, pid: g.pid, vcpus: ORIGIN_VCPUS, memMiB: ORIGIN_MEM_MIB });
      for (const [intervalMs, baseline] of o.latencyRows ?? LATENCY_ROWS) {
        latency.push(await latencyTrials(g, sampler, vmSource, name, ORIGIN_VCPUS, intervalMs, baseline, trials, progress));
      }
      const us = sampler.stats.samples ? sampler.stats.totalUs / sampler.stats.samples : 0;
      log(`Detection-to-decision latency (origin: test guest, 2 vCPUs, TCG; web 0.05 → 2 vCPUs; VM threshold ${latency[0]?.vmThreshold}; ${trials} trials each; one VMI sample reads guest memory for ${us.toFixed(0)} us)`);
      log('"crossed": the VM CPU over a trailing window of one interval first exceeded the threshold (independent 2 ms trace of the QEMU threads)');
      log('rate   container baseline  crossed→decision median (min-max) ms  step sent→decision ms  step→crossed ms  target <= 100 ms after crossing (10 Hz)');
      const mm = (xs: number[]) => `${median(xs).toFixed(0).padStart(5)} (${Math.min(...xs)}-${Math.max(...xs)})`;
      for (const r of latency) {
        log(
          `${r.rate.padEnd(6)} ${r.baseline.padEnd(19)} ${mm(r.crossedToDecision).padEnd(37)} ${mm(r.stepToDecision).padEnd(22)} ${median(r.stepToCrossed).toFixed(0).padStart(15)}  ` +
            `${r.intervalMs === 100 ? (median(r.crossedToDecision) <= 100 ? (Math.max(...r.crossedToDecision) <= 100 ? 'met (every trial)' : 'met (median)') : 'missed') : ''}`,
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
    const samples = new ScaleOutSamples();
    const add = samples.add.bind(samples);
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
          samples.note(M.warm, `restore ${median(restores).toFixed(0)} ms + fix-up ${median(fixups).toFixed(0)} ms (fix-ups ${fixups.map((x) => x.toFixed(0)).join('/')}); image ${(saved.bytes / 2 ** 20).toFixed(0)} MiB, saved once in ${saved.save_ms.toFixed(0)} ms`);
        } catch (e) {
          samples.failed(M.warm, `failed: ${(e as Error).message.slice(0, 160)}`);
        }
      } else {
        samples.failed(M.warm, 'not offered by this provisioner build');
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
    rows = samples.rows();
    // the same minimal VM through libvirt (libvirtd started when absent)
    try {
      rows.push(...(await benchLibvirtScaleOut(reps, progress)));
    } catch (e) {
      rows.push({ method: 'libvirt (all rows)', clone_ms: NaN, boot_ms: NaN, total_ms: NaN, note: `failed: ${(e as Error).message.slice(0, 160)}` });
    }

    const trad = rows.find((r) => r.method === M.trad)!.total_ms;
    log(`Scale-out time (QEMU-direct unless named libvirt, TCG; minimal VM = 1 vCPU, 256 MiB, web only, until its ready line; median of ${reps})`);
    log('method                                               clone ms   boot ms   total ms   vs traditional');
    for (const r of rows) {
      const f = (x: number) => (Number.isFinite(x) ? x.toFixed(x < 10 ? 1 : 0) : '-').padStart(9);
      const ratio = Number.isFinite(r.total_ms) ? `${((r.total_ms / trad) * 100).toFixed(r.total_ms / trad < 0.01 ? 3 : 1)}%` : '-';
      log(`${r.method.padEnd(52)} ${f(r.clone_ms)} ${f(r.boot_ms)}  ${f(r.total_ms)}   ${ratio.padStart(8)}${r.note ? `   ${r.note}` : ''}`);
    }
  }
  return { latency, scaleOut: rows };
}

// `tsx bench/scaling.ts [latency|scaleout] [--trials N] [--reps N] [--rows 100:kept,1000:on-demand]` runs it alone.
if (process.argv[1] && import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const num = (f: string) => (args.includes(f) ? Number(args[args.indexOf(f) + 1]) : undefined);
  const parts = args.filter((x) => x === 'latency' || x === 'scaleout') as ('latency' | 'scaleout')[];
  const rows = args.includes('--rows')
    ? args[args.indexOf('--rows') + 1]!.split(',').map((r) => {
        const [ms, b] = r.split(':');
        if (!(Number(ms) > 0) || (b !== 'kept' && b !== 'on-demand')) throw new Error(`--rows: bad row ${r} (want <interval ms>:kept|on-demand)`);
        return [Number(ms), b] as const;
      })
    : undefined;
  await benchScaling(console.log, { trials: num('--trials'), reps: num('--reps'), parts: parts.length ? parts : undefined, latencyRows: rows });
  process.exit(0);
}
