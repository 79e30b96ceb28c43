// The paper's autoscaling experiment with real traffic, end to end (testbed/traffic/experiment.ts): an
// origin Docker guest (web, db) and an IPVS load-balancer VM on a private segment, an open-loop HTTP
// client sending CPU-costly requests to the VIP at a rate stepped up; the real controller reads the
// origin from outside (VM level from /proc, containers through the compiled 6.1 monitor), picks web and
// starts a clone of the Docker template running only web, which IPVS adds. Nothing sets any container's
// load: the origin's web CPU must fall because half of the requests now go to the replica.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasBuild } from '../../common/build-artifact.ts';
import { buildMonitor } from '../../compiler/build.ts';
import { RELEASE, TrafficExperiment, ORIGIN_IP, trafficPolicy } from '../../testbed/traffic/experiment.ts';
import { quantile } from '../../testbed/traffic/open-loop.ts';

let x: TrafficExperiment;
/** the rate the first scale-out was decided at (the load is kept running into the scale-in test) */
let rate = 0;
const log = process.env.CIEL_E2E_VERBOSE === '1' ? (l: string) => process.stderr.write(`[traffic] ${l}\n`) : () => {};

beforeAll(async () => {
  if (!hasBuild(RELEASE)) await buildMonitor({ release: RELEASE });
  x = await TrafficExperiment.setup({
    tag: `t${process.pid % 100000}`,
    policy: trafficPolicy({ scaleDownWindowMs: 30_000 }),
    log,
    onTick: (t) => {
      const w = (vm: string) => t.vms[vm]?.web?.cpu?.toFixed(2) ?? '-';
      log(`tick ${t.t.toFixed(0)} s: rate ${t.rate}, ok ${t.ok}, failed ${t.failed}, p50 ${t.p50 ?? '-'} ms, origin VM ${t.originVm.toFixed(2)}, web ${Object.keys(t.vms).map(w).join(' / ')}`);
    },
    onEvent: (t) => {
      if (!['vm_check', 'containers_sampled', 'no_rate'].includes(t.e.type)) log(JSON.stringify(t.e));
    },
  });
  x.start();
}, 600_000);

afterAll(async () => {
  await x?.close();
}, 120_000);

describe('real HTTP traffic through IPVS into real Docker containers', () => {
  it('scales out web into a replica running only web; requests split; the origin web CPU falls by itself; no request fails', { timeout: 900_000 }, async () => {
    const decided = () => !!x.find((e) => e.type === 'decision' && e.action === 'scale_out');
    // the rate climbs until the controller decides: where web crosses depends on how fast this host runs
    // TCG (a loaded host stretches a request's guest CPU time: 1-2 req/s there, 4-6 on a quiet one)
    const step = await x.stepRates([1, 2, 3, 4, 6, 8, 10], 20_000, decided, 300_000);
    const dec = x.find((e) => e.type === 'decision' && e.action === 'scale_out')!;
    expect(dec.e).toMatchObject({ container: 'web', vm: x.originName, from: 1, to: 2 });

    const out = await x.waitFor(() => x.find((e) => e.type === 'scaled_out'), 480_000, 'the replica to be added to IPVS');
    const replica = out.e.type === 'scaled_out' ? out.e.replica! : '';
    const firstServed = await x.waitFor(() => x.firstServed.get(replica), 60_000, 'the first request answered by the replica');
    // hold the rate: the after-window starts once the replica has settled in
    const afterFrom = firstServed + 10_000;
    const afterTo = afterFrom + 30_000;
    const countsAt = await x.lb.counts();
    await new Promise((r) => setTimeout(r, afterTo - Date.now() + 1_500));
    const countsEnd = await x.lb.counts();
    rate = step.rate;

    // only web was ever decided on; the replica runs web and nothing else (docker's view and Ciel's)
    expect(x.events.filter((t) => t.e.type === 'decision').map((t) => (t.e.type === 'decision' ? t.e.container : ''))).toEqual(['web']);
    const clone = x.replicas.clone(replica)!;
    expect((await clone.guest.must(`docker ps --format '{{.Names}}'`, 200_000)).trim().split('\n')).toEqual(['web']);
    const seen = x.ticks.filter((t) => t.at > afterFrom && t.vms[replica]).map((t) => Object.keys(t.vms[replica]!).sort().join(','));
    expect(new Set(seen)).toEqual(new Set(['web']));

    // requests split across both (IPVS's own per-real-server counts over the after-window)
    const addr = x.tracking.address(replica)!;
    const d = (k: string) => (countsEnd[`${k}:80`] ?? 0) - (countsAt[`${k}:80`] ?? 0);
    const toOrigin = d(ORIGIN_IP);
    const toReplica = d(addr);
    expect(toOrigin).toBeGreaterThan(0);
    expect(toReplica).toBeGreaterThan(0);
    expect(Math.abs(toOrigin - toReplica)).toBeLessThanOrEqual(Math.max(2, 0.2 * (toOrigin + toReplica)));

    // the origin's web CPU, as Ciel read it from outside, falls; the replica's carries the rest
    const before = TrafficExperiment.aloneWindow(step.at, firstServed);
    const originBefore = x.mean(before.from, before.to, (t) => t.vms[x.originName]?.web?.cpu)!;
    expect(originBefore, 'the origin web CPU while it served the rate alone').toBeGreaterThan(0.05);
    const originAfter = x.mean(afterFrom, afterTo, (t) => t.vms[x.originName]?.web?.cpu)!;
    const replicaAfter = x.mean(afterFrom, afterTo, (t) => t.vms[replica]?.web?.cpu)!;
    expect(originAfter).toBeLessThan(originBefore * 0.75);
    expect(replicaAfter).toBeGreaterThan(0.05);

    // every request sent was answered correctly
    const failed = x.load.results.filter((r) => !r.ok);
    expect(failed).toEqual([]);
    const lat = (from: number, to: number) => x.load.sentIn(from, to).map((r) => r.lat);
    console.log(
      `e2e traffic: ${JSON.stringify({
        rate: step.rate,
        requests_ok: x.load.results.length,
        requests_failed: failed.length,
        to_origin: toOrigin,
        to_replica: toReplica,
        origin_cpu_before: +originBefore.toFixed(3),
        origin_cpu_after: +originAfter.toFixed(3),
        replica_cpu_after: +replicaAfter.toFixed(3),
        p50_before_ms: quantile(lat(before.from, before.to), 0.5),
        p99_before_ms: quantile(lat(before.from, before.to), 0.99),
        p50_after_ms: quantile(lat(afterFrom, afterTo), 0.5),
        p99_after_ms: quantile(lat(afterFrom, afterTo), 0.99),
        first_replica_request_ms: firstServed - step.at,
      })}`,
    );
  });

  it('scale-in: the replica is drained with no request cut and paused into the pool; the load comes back: it is resumed from the pool', { timeout: 600_000 }, async () => {
    expect(rate, 'the scale-out test ran first').toBeGreaterThan(0);
    const dropAt = Date.now();
    x.load.setRate(0.5);
    const inEv = await x.waitFor(() => x.find((e) => e.type === 'scaled_in' && e.container === 'web', dropAt), 240_000, 'the scale-in');
    const replica = inEv.e.type === 'scaled_in' ? inEv.e.replica! : '';
    expect(x.replicas.pooled('web').map((v) => v.name)).toEqual([replica]);
    expect((await x.lb.realServers()).map((r) => r.address)).toEqual([ORIGIN_IP]);

    const riseAt = Date.now();
    x.load.setRate(rate);
    const outEv = await x.waitFor(() => x.find((e) => e.type === 'scaled_out' && e.container === 'web', riseAt), 240_000, 'the scale-out from the pool');
    expect(outEv.e).toMatchObject({ replica, pooled: true });
    const served = await x.waitFor(() => x.firstServed.get(replica), 60_000, 'the first request answered by the resumed replica');
    await new Promise((r) => setTimeout(r, 5_000));
    await x.load.stop();
    expect(x.replicas.pooled('web')).toEqual([]);
    const failed = x.load.results.filter((r) => !r.ok);
    expect(failed).toEqual([]);
    const resumeMs = outEv.e.type === 'scaled_out' ? outEv.e.boot_ms! : -1;
    console.log(`e2e traffic, scale-in and back: ${JSON.stringify({ scale_in_ms: inEv.at - dropAt, resume_to_web_ms: Math.round(resumeMs), rise_to_first_request_ms: served - riseAt, requests_failed: failed.length })}`);
  });
});
