// The web/db/batch services of the autoscaling scenario, created at run time inside a `bare` test guest
// (testbed/guest/boot.ts) through its sh() channel, in Docker cgroup layouts (testbed/guest/containers.ts
// SERVICE_CONTAINERS), and the load driver: CPU load per service is a set of busy loops in the
// service's cgroup, shaped by the cgroup's own cpu.max quota (so "0.9 vCPU" is exactly that, in guest
// time, however busy the host is).
//
//   web    2 busy loops, quota set by the driver (setLoad): the service whose load rises
//   db     1 busy loop at 8 % of a CPU (steady)
//   batch  1 busy loop alternating 4 s at 30 % / 4 s at 2 % of a CPU (a periodic job)

import { SERVICE_CONTAINERS, type ServiceName } from './guest/containers.ts';
import type { Guest } from './guest/boot.ts';

export { SERVICE_CONTAINERS, type ServiceName };

const CG = '/sys/fs/cgroup';
const PERIOD = 100_000;

function svc(name: ServiceName) {
  const c = SERVICE_CONTAINERS.find((x) => x.name === name);
  if (!c) throw new Error(`no service ${name}`);
  return c;
}

/** Docker id → service name, for the sampler. */
export function serviceNames(): Map<string, string> {
  return new Map(SERVICE_CONTAINERS.map((c) => [c.id, c.name]));
}

/** Initial web load, vCPUs. */
export const WEB_IDLE_VCPUS = 0.05;

function script(): string {
  const web = svc('web').cgroup;
  const db = svc('db').cgroup;
  const batch = svc('batch').cgroup;
  return [
    `CG=${CG}`,
    `printf 'while :; do :; done\\n' > /run/burn.sh`,
    'start() {',
    '  mkdir -p "$CG$1" && echo "$2 ' + PERIOD + '" > "$CG$1/cpu.max" || exit 1',
    '  i=0; while [ $i -lt $3 ]; do',
    `    sh -c 'echo $$ > "$0/cgroup.procs"; exec sh /run/burn.sh' "$CG$1" </dev/null >/dev/null 2>&1 &`,
    '    i=$((i+1)); done',
    '}',
    `start ${web} ${Math.round(WEB_IDLE_VCPUS * PERIOD)} 2`,
    `start ${db} 8000 1`,
    `start ${batch} 2000 1`,
    `( while :; do echo "30000 ${PERIOD}" > "$CG${batch}/cpu.max"; sleep 4; echo "2000 ${PERIOD}" > "$CG${batch}/cpu.max"; sleep 4; done ) </dev/null >/dev/null 2>&1 &`,
    // the background shells move themselves into their cgroups when the (TCG, maybe busy) guest runs
    // them: wait up to 5 s for each
    `for p in ${web} ${db} ${batch}; do n=0; while [ "$(wc -l < $CG$p/cgroup.procs)" -lt 1 ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done; done`,
    `for p in ${web} ${db} ${batch}; do echo "$p $(wc -l < $CG$p/cgroup.procs)"; done`,
  ].join('\n');
}

/** Create the three services in a bare guest; resolves when each cgroup holds its processes. */
export async function startServices(g: Pick<Guest, 'sh'>): Promise<void> {
  const b64 = Buffer.from(script()).toString('base64');
  const r = await g.sh(`echo ${b64} | base64 -d > /run/services.sh && sh /run/services.sh`, 15_000);
  if (r.status !== 0) throw new Error(`starting services failed (${r.status}): ${r.output}`);
  for (const name of ['web', 'db', 'batch'] as const) {
    const line = r.output.split('\n').find((l) => l.startsWith(svc(name).cgroup + ' '));
    const n = Number(line?.split(' ')[1]);
    if (!(n >= 1)) throw new Error(`service ${name} has no process: ${r.output}`);
  }
}

/**
 * Set a service's CPU load in vCPUs (its cpu.max quota; up to its number of busy loops). Returns the
 * host time (ms since the epoch) at which the command was *sent*: the load cannot have changed before
 * it, so latencies measured from it are upper bounds.
 */
export async function setLoad(g: Pick<Guest, 'sh'>, name: ServiceName, vcpus: number): Promise<{ sentAt: number; rttMs: number }> {
  const q = vcpus >= 2 ? 'max' : String(Math.max(1000, Math.round(vcpus * PERIOD)));
  const sentAt = Date.now();
  const t0 = performance.now();
  const r = await g.sh(`echo "${q} ${PERIOD}" > ${CG}${svc(name).cgroup}/cpu.max`, 10_000);
  if (r.status !== 0) throw new Error(`setLoad ${name} ${vcpus}: ${r.output}`);
  return { sentAt, rttMs: performance.now() - t0 };
}
