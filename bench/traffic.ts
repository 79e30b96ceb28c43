// Benchmark: the real-traffic experiment (bin/demo.ts, testbed/traffic/) per provisioning method — from
// the VM turning hot (the controller's crossing) to the first request the new replica answered, with the
// client's p99 before and after — for the four methods the Docker replicas have, in two demo runs:
//  1. `--method clone --release pause`: a cold clone of the template (the first scale-out: the pool is
//     empty), then a pooled resume (the second: the replica the scale-in paused);
//  2. `--method warm --release stop`: a warm start from a saved memory image, then a pooled boot (the
//     replica the scale-in powered off, booted again on its own disk).
// The demo is run as its own process, headless, exactly as a user runs it; its JSON line is the data.
import { execa } from 'execa';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

interface DemoResult {
  method: string;
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
  second_scale_out?: { method: string; detect_ms: number; decide_ms: number; clone_ms: number; resume_or_boot_ms: number; first_replica_request_ms: number; failed: number };
}

const RUNS: { label: string; args: string[] }[] = [
  { label: 'clone, then pooled paused', args: ['--method', 'clone', '--release', 'pause'] },
  { label: 'warm start, then pooled stopped', args: ['--method', 'warm', '--release', 'stop'] },
];

async function demo(args: string[], log: (s: string) => void): Promise<DemoResult> {
  log(`traffic: npm run demo -- --headless --until-scaled --scale-in ${args.join(' ')} (real Docker guests, IPVS, open-loop client; ~6 min)`);
  const t0 = performance.now();
  const r = await execa(process.execPath, ['--import', 'tsx', join(ROOT, 'bin', 'demo.ts'), '--headless', '--until-scaled', '--scale-in', ...args], {
    cwd: ROOT,
    reject: false,
    stderr: 'inherit',
    timeout: 25 * 60_000,
  });
  if (r.exitCode !== 0) throw new Error(`the demo (${args.join(' ')}) failed (exit ${r.exitCode}); its progress is above`);
  const d = JSON.parse(r.stdout.trim().split('\n').pop()!) as DemoResult;
  log(`traffic: ${args.join(' ')}: whole run ${((performance.now() - t0) / 1000).toFixed(0)} s; rate at the decision ${d.rate_at_decision} req/s; requests ok ${d.requests_ok}, failed ${d.requests_failed}`);
  return d;
}

export async function benchTraffic(log: (s: string) => void = console.log): Promise<DemoResult[]> {
  const results: DemoResult[] = [];
  for (const run of RUNS) {
    log(`traffic: run ${results.length + 1} of ${RUNS.length}: ${run.label}`);
    results.push(await demo(run.args, log));
  }
  log('| method | VM hot -> decision ms | clone ms | boot/resume/restore to web answering ms | VM hot -> first request answered ms | client p99 before -> after ms (that run) |');
  log('|---|---|---|---|---|---|');
  for (const d of results) {
    const p99 = `${d.p99_before_ms} -> ${d.p99_after_ms}`;
    log(`| ${d.method === 'clone' ? 'clone (cold boot)' : d.method} | ${d.decide_ms} | ${d.clone_ms} | ${d.boot_ms} | ${d.first_replica_request_ms} | ${p99} |`);
    const s = d.second_scale_out;
    if (s) log(`| ${s.method} | ${s.decide_ms} | ${s.clone_ms} | ${s.resume_or_boot_ms} | ${s.first_replica_request_ms} | ${p99} |`);
  }
  for (const d of results) log(`traffic: ${d.method} run: origin web CPU ${d.origin_cpu_before} -> ${d.origin_cpu_after} vCPU`);
  return results;
}
