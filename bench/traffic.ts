// Benchmark: the real-traffic experiment (bin/demo.ts, testbed/traffic/) per provisioning method — from
// the VM turning hot (the controller's crossing) to the first request the new replica answered, with the client's
// p99 before and after — for the methods the Docker replicas have: a cold clone of the template (the
// first scale-out: the pool is empty) and a pooled resume (the second: the replica the scale-in paused).
// The demo is run as its own process, headless, exactly as a user runs it; its JSON line is the data.
// Warm start and pooled-stopped are not built for Docker replicas (README): not in the table.
import { execa } from 'execa';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

interface DemoResult {
  rate_at_decision: number;
  detect_ms: number;
  decide_ms: number;
  clone_ms: number;
  boot_ms: number;
  first_replica_request_ms: number;
  requests_ok: number;
  requests_failed: number;
  p99_before_ms: number | null;
  p99_after_ms: number | null;
  origin_cpu_before: number | null;
  origin_cpu_after: number | null;
  second_scale_out?: { method: string; detect_ms: number; decide_ms: number; resume_or_boot_ms: number; first_replica_request_ms: number; failed: number };
}

export async function benchTraffic(log: (s: string) => void = console.log): Promise<DemoResult> {
  log('traffic: npm run demo -- --headless --until-scaled --scale-in (real Docker guests, IPVS, open-loop client; ~6 min)');
  const t0 = performance.now();
  const r = await execa(process.execPath, ['--import', 'tsx', join(ROOT, 'bin', 'demo.ts'), '--headless', '--until-scaled', '--scale-in'], {
    cwd: ROOT,
    reject: false,
    stderr: 'inherit',
    timeout: 20 * 60_000,
  });
  if (r.exitCode !== 0) throw new Error(`the demo failed (exit ${r.exitCode}); its progress is above`);
  const d = JSON.parse(r.stdout.trim().split('\n').pop()!) as DemoResult;
  const s = d.second_scale_out;
  log(`traffic: whole run ${((performance.now() - t0) / 1000).toFixed(0)} s; rate at the decision ${d.rate_at_decision} req/s; requests ok ${d.requests_ok}, failed ${d.requests_failed}`);
  log('| method | VM hot -> decision ms | clone ms | boot/resume to web answering ms | VM hot -> first request answered ms |');
  log('|---|---|---|---|---|');
  log(`| clone (cold boot) | ${d.decide_ms} | ${d.clone_ms} | ${d.boot_ms} | ${d.first_replica_request_ms} |`);
  if (s) log(`| ${s.method} | ${s.decide_ms} | 0 | ${s.resume_or_boot_ms} | ${s.first_replica_request_ms} |`);
  if (s) log(`traffic: pooled resume / cold clone, VM hot to first request answered: ${((s.first_replica_request_ms / d.first_replica_request_ms) * 100).toFixed(1)} %`);
  log(`traffic: client p99 ${d.p99_before_ms} ms (origin alone) -> ${d.p99_after_ms} ms (origin + replica); origin web CPU ${d.origin_cpu_before} -> ${d.origin_cpu_after} vCPU`);
  return d;
}
