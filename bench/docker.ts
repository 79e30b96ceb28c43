// Benchmark on the real Docker guest (Debian 12, systemd, docker.io, cgroup v2), two boots:
//  - the paper's Fig. 10 on real Docker: clone (qcow2 overlay + offline edit) and boot to "serving HTTP"
//    for the traditional whole VM (web, db, batch all start) and for the minimal VM (only web's restart
//    policy left on, its own address on its disk); then the minimal VM's other provisioning methods, with
//    the functions the replica provisioner uses: pooled paused (QMP stop, then cont to web answering),
//    pooled stopped (clean poweroff, booted again on its overlay to web answering) and warm start (that VM
//    saved as a warm image, a new VM restored from it with another address and MAC, to web answering);
//  - on the whole VM: one outside sample (paused guest, median) next to the same numbers read inside the
//    guest by an agent: the cgroupfs/procfs files (awk, the ground-truth reader) and `docker stats`.
import { VmSession } from '../vmi/session.ts';
import type { QemuLiveBackend } from '../vmi/backends/qemu-live.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { answers, bootAgain, controlQmp, probeFromSpawn, waitAnswering, waitServing, type DockerGuest } from '../testbed/docker-guest/boot.ts';
import { cloneAndBoot, type DockerClone } from '../testbed/docker-guest/clone.ts';
import { saveWarmImage, warmStart, type WarmStarted } from '../testbed/docker-guest/warm.ts';
import { guestTruth, runningContainers } from '../testbed/docker-guest/truth.ts';

const RELEASE = '6.1.0-56-amd64';
const RUNS = 40;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export interface DockerBench {
  wholeVm: { toWebMs: number; toAllMs: number; editMs: number };
  minimalVm: { toWebMs: number; editMs: number };
  /** the minimal VM's pooled and warm methods, each to web answering */
  minimalPooledPausedMs: number;
  minimalPooledStoppedMs: number;
  minimalWarm: WarmStarted['times'] & { save_ms: number; image_mib: number };
  containers: number;
  samplePausedUs: number;
  sampleWarmUs: number;
  guestCgroupfsUs: number;
  guestDockerStatsMs: number;
}

/** Time a script inside the guest with the guest's own clock (ns), so the channel's latency is not counted. */
async function guestTimed(g: DockerGuest, script: string, runs: number): Promise<number[]> {
  const out = await g.must(`for i in $(seq ${runs}); do a=$(date +%s%N); ${script} >/dev/null; b=$(date +%s%N); echo $((b-a)); done`, 600_000);
  return out.trim().split('\n').map(Number);
}

export async function benchDocker(log: (s: string) => void = console.log): Promise<DockerBench> {
  const quiet = (l: string) => (process.env.CIEL_BENCH_VERBOSE ? process.stderr.write(`${l}\n`) : undefined);
  let whole: DockerClone | undefined;
  let minimal: DockerClone | undefined;
  let rebooted: DockerGuest | undefined;
  let warmVm: WarmStarted | undefined;
  const imageDir = mkdtempSync(join(tmpdir(), 'ciel-bench-warm-'));
  try {
    // services are probed from QEMU's spawn on, not from the control channel's first answer
    let probe: Promise<Record<string, number>> | undefined;
    // (db is asked once the control channel answers, as the tests do: redis probed through QEMU's port
    // forward from the first second on stopped answering on one run)
    whole = await cloneAndBoot({ name: `bench-whole-${process.pid}`, log: quiet, onSpawned: (i) => void (probe = probeFromSpawn(i, ['web'], 900_000)).catch(() => {}) });
    const first = await probe!;
    const toAll = await waitServing(whole.guest, ['web', 'db', 'batch'], 600_000);
    const sinceClone = whole.guest.t0 - whole.t0;
    const wholeVm = { toWebMs: first.web! + sinceClone, toAllMs: toAll + sinceClone, editMs: whole.times.editMs };

    const ctrs = await runningContainers(whole.guest, 'cgroup2');
    const { backend, monitor } = await VmSession.open({ name: 'docker', backend: 'qemu', qmp: whole.guest.qmpSocket, memory: whole.guest.memFile, kernel: RELEASE }).then((s) => ({ backend: s.backend as QemuLiveBackend, monitor: s.monitor }));
    const paused: number[] = [];
    const warm: number[] = [];
    try {
      for (let i = 0; i < RUNS; i++) {
        await backend.pause();
        try {
          const t = performance.now();
          const s = monitor.sample();
          paused.push((performance.now() - t) * 1000);
          if (s.containers.length !== ctrs.length) throw new Error(`sample saw ${s.containers.length} containers, Docker runs ${ctrs.length}`);
        } finally {
          await backend.resume();
        }
        const t = performance.now();
        monitor.sample();
        warm.push((performance.now() - t) * 1000);
      }
    } finally {
      monitor.close();
      await backend.close();
    }
    // the agent's way: the same numbers from cgroupfs/procfs inside the guest (truth.awk over ctrs), and docker stats
    await guestTruth(whole.guest, 'cgroup2'); // installs the reader in the guest
    const cgroupfsNs = await guestTimed(whole.guest, 'awk -v CONVFMT=%.0f -v seq=1 -v mode=cgroup2 -f /run/ciel/truth.awk /run/ciel/ctrs', 10);
    const statsNs = await guestTimed(whole.guest, 'docker stats --no-stream', 3);
    await whole.stop();
    whole = undefined;

    let probeMin: Promise<Record<string, number>> | undefined;
    minimal = await cloneAndBoot({ name: `bench-minimal-${process.pid}`, keep: ['web'], address: '10.0.2.16/24', log: quiet, onSpawned: (i) => void (probeMin = probeFromSpawn(i, ['web'], 900_000)).catch(() => {}) });
    const firstMin = await probeMin!;
    const minimalVm = { toWebMs: firstMin.web! + (minimal.guest.t0 - minimal.t0), editMs: minimal.times.editMs };
    const webUp = (g: DockerGuest, what: string) => waitAnswering(g, () => answers(g, 'web'), { deadline: performance.now() + 420_000, what, intervalMs: 100 });

    // pooled paused: paused a while (as in the pool), then resumed
    await controlQmp(minimal.guest, (q) => q.stop());
    await new Promise((r) => setTimeout(r, 2000));
    const tResume = performance.now();
    await controlQmp(minimal.guest, (q) => q.cont());
    const minimalPooledPausedMs = (await webUp(minimal.guest, 'web after the resume')) - tResume;

    // pooled stopped: a clean poweroff keeps its overlay; booted again on it
    if (!(await minimal.guest.poweroff())) throw new Error('the minimal VM did not power off cleanly');
    const tBoot = performance.now();
    rebooted = await bootAgain(minimal.guest, quiet);
    const minimalPooledStoppedMs = (await webUp(rebooted, 'web after the boot from the pool')) - tBoot;

    // warm start: that VM saved (its overlay frozen), a new VM restored from it as 10.0.2.17
    const image = await saveWarmImage({ guest: rebooted, overlay: minimal.overlay }, imageDir, { log: quiet });
    warmVm = await warmStart(image, { name: `bench-warm-${process.pid}`, address: '10.0.2.17/24', mac: '52:54:00:c1:77:17', log: quiet });
    const minimalWarm = { ...warmVm.times, save_ms: image.save_ms, image_mib: image.bytes / 2 ** 20 };
    await warmVm.stop();
    warmVm = undefined;
    await minimal.stop();
    minimal = undefined;

    const r: DockerBench = {
      wholeVm,
      minimalVm,
      minimalPooledPausedMs,
      minimalPooledStoppedMs,
      minimalWarm,
      containers: ctrs.length,
      samplePausedUs: median(paused),
      sampleWarmUs: median(warm),
      guestCgroupfsUs: median(cgroupfsNs) / 1000,
      guestDockerStatsMs: median(statsNs) / 1e6,
    };
    const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
    log('## Real Docker guest (Debian 12, systemd, docker.io 20.10, cgroup v2, TCG 2 vCPUs, 1 GiB)');
    log('');
    log('| Fig. 10 on real Docker: clone + boot to | whole VM (web, db, batch) | minimal VM (web only) |');
    log('|---|---|---|');
    log(`| web serving HTTP | ${s(wholeVm.toWebMs)} | ${s(minimalVm.toWebMs)} |`);
    log(`| all three answering | ${s(wholeVm.toAllMs)} | - |`);
    log(`| of which overlay + offline edit | ${wholeVm.editMs.toFixed(0)} ms | ${minimalVm.editMs.toFixed(0)} ms |`);
    log('');
    log('| the minimal VM (web only), other methods: to web serving HTTP | time |');
    log('|---|---|');
    log(`| cold clone + boot (above) | ${s(minimalVm.toWebMs)} |`);
    log(`| pooled paused: resume (QMP cont) | ${minimalPooledPausedMs.toFixed(0)} ms |`);
    log(`| pooled stopped: boot again on its overlay | ${s(minimalPooledStoppedMs)} |`);
    log(`| warm start: overlay + restore + identity fix-up | ${s(minimalWarm.boot_ms + minimalWarm.clone_ms)} (overlay ${minimalWarm.clone_ms.toFixed(0)} ms, restore ${s(minimalWarm.restore_ms)}, fix-up ${s(minimalWarm.fixup_ms)}) |`);
    log(`| (saving the warm image, once: ${minimalWarm.image_mib.toFixed(0)} MiB) | ${s(minimalWarm.save_ms)} |`);
    log('');
    log(`| one sample of ${ctrs.length} containers (median of ${RUNS}) | time |`);
    log('|---|---|');
    log(`| Ciel from outside, guest paused | ${r.samplePausedUs.toFixed(0)} us |`);
    log(`| Ciel from outside, guest running | ${r.sampleWarmUs.toFixed(0)} us |`);
    log(`| in-guest agent: cgroupfs + /proc/<pid>/net/dev (awk, guest clock, TCG) | ${r.guestCgroupfsUs.toFixed(0)} us |`);
    log(`| in-guest agent: docker stats --no-stream (guest clock, TCG) | ${r.guestDockerStatsMs.toFixed(0)} ms |`);
    return r;
  } finally {
    await whole?.stop();
    await warmVm?.stop();
    await rebooted?.stop();
    await minimal?.stop();
    rmSync(imageDir, { recursive: true, force: true });
  }
}
