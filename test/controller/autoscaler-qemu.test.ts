// The Autoscaler wired to a real provisioner: a busy origin VM (QEMU, TCG) is seen hot through its real
// VM-level stats (/proc/<qemu pid>), a replica VM is cloned and booted to its ready line, registered with
// the (fake) balancer; when the origin goes quiet the replica goes back to the pool, and the next hot
// spell reuses it. The container-level sampler is a stand-in (the VMI monitor plugs in there): it
// attributes 95 % of the origin's measured CPU time to the `web` container.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cacheDir } from '../../common/cache.ts';
import { Autoscaler, type Backend, type LoadBalancer } from '../../controller/autoscaler.ts';
import { PolicyEngine } from '../../controller/policy.ts';
import type { ControllerEvent, VmStats } from '../../controller/types.ts';
import { ensureTestGuest, type TestGuest } from '../../testbed/minimal-guest.ts';
import type { Vm, VmSpec } from '../../provisioners/provisioner.ts';
import { QemuDirectProvisioner } from '../../provisioners/qemu-direct.ts';
import type { Sample } from '../../vmi/sample.ts';

let guest: TestGuest;
let prov: QemuDirectProvisioner;
let origin: Vm;

const spec = (name: string, container: string, extra = ''): VmSpec => guest.spec(name, container, { extraCmdline: extra });

beforeAll(async () => {
  guest = await ensureTestGuest();
  prov = new QemuDirectProvisioner({ template: guest.template, dir: cacheDir('provisioner-test', 'autoscaler') });
  origin = (await prov.acquire(spec('ciel-as-origin', 'web', ' ciel.load=1'))).vm;
}, 180_000);

afterAll(async () => {
  await prov?.close();
});

describe('Autoscaler with the QEMU-direct provisioner', () => {
  it('hot origin → clone+boot replica → quiet → back to pool → hot → pooled replica resumed', { timeout: 300_000 }, async () => {
    const events: ControllerEvent[] = [];
    const backends: string[] = [];
    const lb: LoadBalancer = {
      addBackend: async (_s: string, b: Backend) => {
        backends.push(b.vm);
      },
      removeBackend: async (_s: string, b: Backend) => {
        backends.splice(backends.indexOf(b.vm), 1);
      },
    };
    let last: VmStats | undefined;
    const engine = new PolicyEngine(
      {
        // low thresholds: a busy 1-vCPU TCG guest gets anywhere from 0.3 to 1 host core on a shared 2-core machine
        policies: [{ resource: 'cpu', vmThreshold: 0.1, containerThreshold: 0.08, target: 0.05 }],
        scaleUpCooldownMs: 5_000,
        scaleDownWindowMs: 3_000,
        maxReplicas: 2,
      },
      Date.now,
    );
    const a = new Autoscaler({
      vms: [origin.name],
      engine,
      vmSource: {
        vmStats: async (name) => (last = await prov.vmStats(name)),
      },
      sampler: {
        sample: async (): Promise<Sample> => {
          const s = await prov.vmStats(origin);
          return {
            time: s.time,
            kernel: '6.1.0-56-amd64',
            sample_us: 0,
            vm: origin.name,
            containers: [
              { id: 'web', cgroup: '/web', name: 'web', cpu_usage_ns: Math.round(s.cpu_time_ns * 0.95), memory_usage_bytes: 0, memory_rss_bytes: 0, memory_cache_bytes: 0, io_read_bytes: 0, io_write_bytes: 0, net_rx_bytes: 0, net_tx_bytes: 0, pids: 2 },
            ],
          };
        },
      },
      provisioner: prov,
      lb,
      specFor: (container, name) => spec(name, container),
      emit: (e) => events.push(e),
      intervalMs: 1000,
    });
    const ac = new AbortController();
    const loop = a.run(ac.signal);
    const waitFor = async (pred: () => boolean, ms: number, what: string) => {
      const end = Date.now() + ms;
      while (!pred()) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}; last VM stats ${JSON.stringify(last)}; events: ${JSON.stringify(events.slice(-8))}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    };
    const count = (t: ControllerEvent['type']) => events.filter((e) => e.type === t).length;
    try {
      await waitFor(() => count('scaled_out') === 1, 120_000, 'the first scale-out');
      const first = events.find((e) => e.type === 'scaled_out')!;
      expect(first).toMatchObject({ container: 'web', pooled: false });
      expect(backends).toHaveLength(1);
      // the origin goes quiet: pause it (its CPU time stops)
      await prov.release(origin, 'pause');
      await waitFor(() => count('scaled_in') === 1, 60_000, 'the scale-in');
      expect(backends).toEqual([]);
      expect(prov.pooled().map((v) => v.state)).toContain('paused');
      // hot again: the pooled replica is resumed, no clone
      await prov.start(origin);
      await waitFor(() => count('scaled_out') === 2, 60_000, 'the second scale-out');
      const second = events.filter((e) => e.type === 'scaled_out')[1]!;
      expect(second).toMatchObject({ container: 'web', pooled: true, clone_ms: 0 });
      expect(second.type === 'scaled_out' && second.replica).toBe(first.type === 'scaled_out' && first.replica);
      console.log(
        `autoscaler+qemu-direct: ${JSON.stringify(events.filter((e) => e.type === 'decision' || e.type === 'scaled_out' || e.type === 'scaled_in'))}`,
      );
    } finally {
      ac.abort();
      await loop;
    }
    const decisions = events.filter((e) => e.type === 'decision').map((e) => e.type === 'decision' && `${e.action} ${e.from}->${e.to}`);
    expect(decisions).toEqual(['scale_out 1->2', 'scale_in 2->1', 'scale_out 1->2']);
  });
});
