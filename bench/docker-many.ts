// Benchmark: one sample of a real Docker guest (Debian 12, systemd, docker.io, cgroup v2) running 100
// containers, read from outside, next to an in-guest agent reading the same numbers.
//  - the containers are made by dockerd itself (`docker create` + `docker start`, busybox sleep from the
//    template's imported image, default bridge network: each has its own cgroup, netns and veth); nothing
//    is cached between runs: the clone boots from the template and Docker starts them in this run;
//  - outside: median of RUNS samples, guest paused (the consistent sample) and running (baseline read);
//    each checked to see exactly the containers Docker reports; also, for comparison, the same monitor
//    reading every cgroup's statistics (the sample before CIEL_ARG_CONTAINERS_ONLY);
//  - inside (guest clock, TCG): the same fields from cgroupfs/procfs by awk (testbed/guest/truth.awk,
//    the reader the accuracy tests trust), and `docker stats --no-stream`.
import { VmSession } from '../vmi/session.ts';
import type { QemuLiveBackend } from '../vmi/backends/qemu-live.ts';
import { dockerIdOf } from '../vmi/guest-monitor.ts';
import { cloneAndBoot, type DockerClone } from '../testbed/docker-guest/clone.ts';
import { startManyContainers } from '../testbed/docker-guest/many-containers.ts';
import { guestTruth, runningContainers } from '../testbed/docker-guest/truth.ts';

const RELEASE = '6.1.0-56-amd64';
const CONTAINERS = Number(process.env.CIEL_BENCH_CONTAINERS ?? 100);
const RUNS = 60;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const p90 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.9)]!;

export interface DockerManyBench {
  containers: number;
  cgroups: number;
  startMs: number;
  pausedUs: number;
  pausedP90Us: number;
  runningUs: number;
  runningP90Us: number;
  everyCgroupPausedUs: number;
  pages: number;
  accesses: number;
  guestCgroupfsMs: number;
  guestDockerStatsMs: number;
}

export async function benchDockerMany(log: (s: string) => void = console.log): Promise<DockerManyBench> {
  const quiet = (l: string) => (process.env.CIEL_BENCH_VERBOSE ? process.stderr.write(`${l}\n`) : undefined);
  let vm: DockerClone | undefined;
  try {
    // 100 shims and sleeps need more than the template's 1 GiB
    vm = await cloneAndBoot({ name: `bench-many-${process.pid}`, memMiB: 2048, log: quiet });
    const started = await startManyContainers(vm.guest, { total: CONTAINERS, log: quiet });
    const ctrs = await runningContainers(vm.guest, 'cgroup2');
    const ids = new Set(ctrs.map((c) => c.id));
    const session = await VmSession.open({ name: 'docker-many', backend: 'qemu', qmp: vm.guest.qmpSocket, memory: vm.guest.memFile, kernel: RELEASE });
    const backend = session.backend as QemuLiveBackend;
    const monitor = session.monitor;
    const check = (seen: string[]) => {
      if (seen.length !== ids.size || !seen.every((id) => ids.has(id))) throw new Error(`sample saw ${seen.length} containers, Docker runs ${ids.size}`);
    };
    const paused: number[] = [];
    const running: number[] = [];
    const every: number[] = [];
    let cgroups = 0;
    try {
      for (let i = 0; i < RUNS; i++) {
        await backend.pause();
        try {
          const containersOnly = () => {
            const t = performance.now();
            const s = monitor.sample();
            paused.push((performance.now() - t) * 1000);
            check(s.containers.map((c) => c.id));
          };
          // the same read with every cgroup's statistics, every record decoded (the sample before)
          const everyCgroup = () => {
            const t = performance.now();
            const all = monitor.readCgroups('ciel_mon_cgroup_v2').records;
            const seen = all.map((r) => dockerIdOf(r.path)).filter((id): id is string => id !== null);
            every.push((performance.now() - t) * 1000);
            check(seen);
            cgroups = all.length;
          };
          // the first read after a resume pays for the guest pages the vCPUs touched: alternate who goes first
          if (i % 2) {
            everyCgroup();
            containersOnly();
          } else {
            containersOnly();
            everyCgroup();
          }
        } finally {
          await backend.resume();
        }
        const t = performance.now();
        const s = monitor.sample();
        running.push((performance.now() - t) * 1000);
        check(s.containers.map((c) => c.id));
      }
    } finally {
      await session.close();
    }
    const st = monitor.lastStats!;
    // the agent's way, timed by the guest's own clock (the control channel's latency not counted)
    await guestTruth(vm.guest, 'cgroup2'); // installs the reader in the guest
    const timed = async (script: string, runs: number) =>
      (await vm!.guest.must(`for i in $(seq ${runs}); do a=$(date +%s%N); ${script} >/dev/null; b=$(date +%s%N); echo $((b-a)); done`, 1_800_000))
        .trim().split('\n').map((ns) => Number(ns) / 1e6);
    const cgroupfsMs = await timed('awk -v CONVFMT=%.0f -v seq=1 -v mode=cgroup2 -f /run/ciel/truth.awk /run/ciel/ctrs', 5);
    const statsMs = await timed('docker stats --no-stream', 3);
    const r: DockerManyBench = {
      containers: ids.size,
      cgroups,
      startMs: started.ms,
      pausedUs: median(paused),
      pausedP90Us: p90(paused),
      runningUs: median(running),
      runningP90Us: p90(running),
      everyCgroupPausedUs: median(every),
      pages: st.pages,
      accesses: st.accesses,
      guestCgroupfsMs: median(cgroupfsMs),
      guestDockerStatsMs: median(statsMs),
    };
    log(`## One sample of a real Docker guest with ${r.containers} running containers (Debian 12, systemd, docker.io 20.10, cgroup v2; ${r.cgroups} cgroups in all; TCG, 2 vCPUs, 2 GiB)`);
    log('');
    log(`Docker started them in ${(r.startMs / 1000).toFixed(0)} s (docker create + start, in parallel). Outside: median (p90) of ${RUNS}; the last sample touched ${r.pages} guest pages in ${r.accesses} loads.`);
    log('');
    log('| reader | one sample of every container (cpu, memory usage/rss/cache/inactive_file, io, net, pids) |');
    log('|---|---|');
    log(`| Ciel from outside, guest paused | ${r.pausedUs.toFixed(0)} us (p90 ${r.pausedP90Us.toFixed(0)}) |`);
    log(`| Ciel from outside, guest running | ${r.runningUs.toFixed(0)} us (p90 ${r.runningP90Us.toFixed(0)}) |`);
    log(`| Ciel from outside, paused, statistics of every cgroup (before CIEL_ARG_CONTAINERS_ONLY) | ${r.everyCgroupPausedUs.toFixed(0)} us |`);
    log(`| in-guest agent: cgroupfs + /proc/<pid>/net/dev (awk, guest clock, TCG) | ${r.guestCgroupfsMs.toFixed(0)} ms |`);
    log(`| in-guest agent: docker stats --no-stream (guest clock, TCG) | ${r.guestDockerStatsMs.toFixed(0)} ms |`);
    log(`target: <= 1 ms median (paused) -> ${r.pausedUs <= 1000 ? 'met' : 'NOT met'}`);
    return r;
  } finally {
    await vm?.stop();
  }
}
