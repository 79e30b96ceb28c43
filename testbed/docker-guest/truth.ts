// Ground truth from inside a real Docker guest, read the way the busybox guest reads it (testbed/guest/
// truth.awk over cgroupfs and /proc/<pid>/net/dev), for the containers Docker runs: their ids and main pids
// from `docker inspect`, their cgroup from the kernel's own /proc/<pid>/cgroup. Also `docker stats`, the
// in-guest agent the numbers are compared with.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ToolError } from '../../common/errors.ts';
import { parseTruthLine, type Truth } from '../guest/truth.ts';
import type { DockerGuest } from './boot.ts';

const TRUTH_AWK = readFileSync(fileURLToPath(new URL('../guest/truth.awk', import.meta.url)), 'utf8');

export interface RunningContainer {
  name: string;
  id: string;
  cgroup: string;
  pid: number;
}

export type GuestCgroupMode = 'cgroup2' | 'cgroup1';

/**
 * The containers running on a cgroup v2 (systemd driver) guest, by name, read from the kernel: a running
 * container has a docker-<id>.scope under system.slice. Not through `docker ps`: right after a boot,
 * dockerd's API can stay silent for minutes under TCG on a loaded host while its containers serve.
 * `names`: Docker id → name (the template's ids); an unknown id is returned as is.
 */
export async function runningByScope(g: DockerGuest, names: Record<string, string>): Promise<string[]> {
  const out = await g.must('ls /sys/fs/cgroup/system.slice', 120_000);
  const ids = out.split('\n').map((l) => /^docker-([0-9a-f]{64})\.scope$/.exec(l.trim())?.[1]).filter((id): id is string => !!id);
  return ids.map((id) => names[id] ?? id);
}

/** The running containers as Docker and the kernel see them; also written to /run/ciel/ctrs for truth(). */
export async function runningContainers(g: DockerGuest, mode: GuestCgroupMode): Promise<RunningContainer[]> {
  // v1: the cpu,cpuacct hierarchy's line of /proc/<pid>/cgroup; v2: the single 0:: line
  const pick = mode === 'cgroup2' ? `sed -n 's/^0:://p'` : `sed -n 's/^[0-9]*:cpu,cpuacct://p'`;
  const out = await g.must(
    `mkdir -p /run/ciel; : > /run/ciel/ctrs.new
for id in $(docker ps -q --no-trunc); do
  set -- $(docker inspect -f '{{.Name}} {{.State.Pid}}' $id)
  echo "\${1#/} $id $(${pick} /proc/$2/cgroup) $2" >> /run/ciel/ctrs.new
done
mv /run/ciel/ctrs.new /run/ciel/ctrs; cat /run/ciel/ctrs`,
    120_000,
  );
  return out
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [name, id, cgroup, pid] = l.split(' ');
      if (!name || !/^[0-9a-f]{64}$/.test(id ?? '') || !cgroup || !/^\d+$/.test(pid ?? '')) throw new ToolError('docker', `unexpected container line: ${l}`);
      return { name, id: id!, cgroup, pid: Number(pid) };
    });
}

let seq = 0;

/**
 * One reading of every container in /run/ciel/ctrs by the guest itself (cgroupfs, procfs). Debian's awk is
 * mawk, which turns integers above 2^31 into "%.6g" text when concatenating (6930816867 -> 6.93082e+09):
 * CONVFMT=%.0f keeps counters exact.
 */
export async function guestTruth(g: DockerGuest, mode: GuestCgroupMode): Promise<Truth> {
  const s = ++seq;
  const sent = Date.now();
  const out = await g.must(`[ -f /run/ciel/truth.awk ] || cat > /run/ciel/truth.awk <<'CIEL_EOF'\n${TRUTH_AWK}CIEL_EOF\nawk -v CONVFMT=%.0f -v seq=${s} -v mode=${mode} -f /run/ciel/truth.awk /run/ciel/ctrs`, 60_000);
  return parseTruthLine(out, sent, Date.now());
}

export interface DockerStatsRow {
  name: string;
  id: string;
  /** MemUsage's first half, in bytes (docker: usage minus inactive file) */
  memBytes: number;
  netRxBytes: number;
  netTxBytes: number;
  pids: number;
}

/** docker's human sizes ("1.637MiB", "12.3kB", "0B") back to bytes; docker prints 4 significant digits. */
export function parseDockerSize(s: string): number {
  const m = /^([\d.]+)\s*([kKMGT]?i?B)$/.exec(s.trim());
  if (!m) throw new ToolError('docker', `unexpected size ${JSON.stringify(s)}`);
  const unit: Record<string, number> = { B: 1, kB: 1e3, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, TiB: 1024 ** 4 };
  const f = unit[m[2]!];
  if (f === undefined) throw new ToolError('docker', `unexpected unit in ${s}`);
  return Number(m[1]) * f;
}

/** `docker stats --no-stream` inside the guest, parsed; ms is how long the agent took. */
export async function dockerStats(g: DockerGuest): Promise<{ rows: DockerStatsRow[]; ms: number }> {
  const t = performance.now();
  const out = await g.must(`docker stats --no-stream --no-trunc --format '{{.Name}}|{{.ID}}|{{.MemUsage}}|{{.NetIO}}|{{.PIDs}}'`, 120_000);
  const ms = performance.now() - t;
  const rows = out
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [name, id, mem, net, pids] = l.split('|');
      const [rx, tx] = (net ?? '').split('/');
      return { name: name!, id: id!, memBytes: parseDockerSize(mem!.split('/')[0]!), netRxBytes: parseDockerSize(rx!), netTxBytes: parseDockerSize(tx!), pids: Number(pids) };
    });
  return { rows, ms };
}
