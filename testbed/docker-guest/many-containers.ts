// Many real containers on a running Docker guest: `docker create` then `docker start` in parallel batches
// (one `docker run -d` takes ~8 s under TCG, mostly dockerd/containerd/runc work that overlaps well).
// Each container is a busybox `sleep` from the template's own imported image (ciel/batch:1), on Docker's
// default bridge network like any `docker run`: its own cgroup, netns and veth, made by dockerd itself.
import { ToolError } from '../../common/errors.ts';
import type { DockerGuest } from './boot.ts';

export interface ManyContainersOptions {
  /** how many containers Docker should be running in the end (counting the ones already running) */
  total: number;
  /** docker commands run at once in the guest */
  parallel?: number;
  /** name prefix of the containers made here */
  prefix?: string;
  timeoutMs?: number;
  log?: (m: string) => void;
}

/** Make and start containers until Docker runs `total` of them; returns how many run and how long it took. */
export async function startManyContainers(g: DockerGuest, o: ManyContainersOptions): Promise<{ running: number; ms: number }> {
  const t0 = performance.now();
  const prefix = o.prefix ?? 'many';
  const parallel = o.parallel ?? 8;
  // dockerd is up well after the control channel (TCG: "Loading containers" alone takes up to a minute)
  await g.must('i=0; until docker ps -q >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 300 ] && exit 1; sleep 1; done', 330_000);
  const running = Number((await g.must('docker ps -q | wc -l', 120_000)).trim());
  const need = o.total - running;
  if (need > 0) {
    // names already taken (an earlier partial run) make create fail; those are started all the same
    await g.must(
      `mkdir -p /run/ciel; : > /run/ciel/many.err
seq 1 ${need} | xargs -P ${parallel} -I{} sh -c 'docker create --name ${prefix}-{} --stop-signal SIGKILL ciel/batch:1 /bin/sleep 2000000000 >/dev/null 2>>/run/ciel/many.err || true'
docker ps -aq --filter name=${prefix}- --filter status=created | xargs -r -n 4 -P ${parallel} docker start >/dev/null 2>>/run/ciel/many.err || true`,
      o.timeoutMs ?? 1_800_000,
    );
  }
  const now = Number((await g.must('docker ps -q | wc -l', 120_000)).trim());
  o.log?.(`${now} containers running (${need > 0 ? need : 0} started in ${((performance.now() - t0) / 1000).toFixed(0)} s)`);
  if (now < o.total) {
    const err = await g.sh('tail -3 /run/ciel/many.err', 60_000).catch(() => null);
    throw new ToolError('docker', `only ${now} of ${o.total} containers are running: ${err?.out.trim() ?? ''}`);
  }
  return { running: now, ms: performance.now() - t0 };
}
