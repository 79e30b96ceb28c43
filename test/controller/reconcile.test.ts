// controller/reconcile.ts over a recording pool and balancer: what each recorded step becomes when its VM
// runs or not, orphans, and a state beyond maxReplicas. (The same on real QEMU replicas, killed at each
// step: crash-recovery.test.ts.)
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { useTempCache } from '../fixtures/temp-cache.ts';
import { reconcile, type RecoverablePool } from '../../controller/reconcile.ts';
import { ReplicaAddresses } from '../../controller/replica-addresses.ts';
import { StateStore, type ReplicaState } from '../../controller/state-store.ts';
import type { Vm } from '../../provisioners/provisioner.ts';

const dir = useTempCache('reconcile');

function setup(name: string, rows: [string, ReplicaState, boolean][], extra: string[] = []) {
  const cfg = join(dir, `${name}.json`);
  writeFileSync(cfg, '{}');
  const store = StateStore.open(cfg);
  const p = store.prefix;
  const alive = new Set<string>();
  rows.forEach(([n, state, up], i) => {
    store.put({ name: `${p}-${n}`, container: 'web', origin: 'o', state, spec: { name: `${p}-${n}`, container: 'web', vcpus: 1, memMiB: 64, kernel: 'k', initrd: 'i', cmdline: 'c', disk: 'overlay' }, address: `10.0.0.${i + 2}/24` });
    if (up) alive.add(`${p}-${n}`);
  });
  const calls: string[] = [];
  const pool: RecoverablePool = {
    leftovers: (prefix) => new Set([...alive, ...extra.map((e) => `${p}-${e}`)].filter((x) => x.startsWith(prefix))),
    adopt: async (vm: Vm, pooled: boolean) => {
      if (!alive.has(vm.name)) return false;
      calls.push(`adopt ${vm.name.slice(p.length + 1)}${pooled ? ' pooled' : ''}`);
      return true;
    },
    reap: async (n) => {
      calls.push(`reap ${n.slice(p.length + 1)}`);
      alive.delete(n); // reaped: no process or files left to list
      extra.splice(0, extra.length, ...extra.filter((e) => `${p}-${e}` !== n));
    },
    release: async (vm) => void calls.push(`release ${vm.name.slice(p.length + 1)}`),
  };
  const lb = {
    addBackend: async (s: string, b: { vm: string; address?: string }) => void calls.push(`lb add ${s} ${b.vm.slice(p.length + 1)} ${b.address}`),
    removeBackend: async (s: string, b: { vm: string; address?: string }) => void calls.push(`lb remove ${s} ${b.vm.slice(p.length + 1)} ${b.address}`),
  };
  return { store, pool, lb, calls, p };
}

describe('reconcile', () => {
  it('each recorded step, running or not', async () => {
    const { store, pool, lb, calls, p } = setup('steps', [
      ['a', 'intent', false],
      ['b', 'cloned', true],
      ['c', 'booted', true],
      ['d', 'registering', false],
      ['e', 'serving', true],
      ['f', 'serving', false],
      ['g', 'draining', true],
      ['h', 'pooled', false],
    ], ['zz']);
    const addrs = new ReplicaAddresses(['10.0.0.2/24', '10.0.0.3/24', '10.0.0.4/24', '10.0.0.5/24', '10.0.0.6/24', '10.0.0.7/24', '10.0.0.8/24', '10.0.0.9/24']);
    const r = await reconcile({ store, pool, lb, addrs, maxReplicas: 10 });
    expect(calls).toEqual([
      'reap a',
      'reap b',
      'adopt c',
      'lb add web c 10.0.0.4',
      'lb remove web d 10.0.0.5',
      'reap d',
      'adopt e',
      'lb remove web f 10.0.0.7',
      'reap f',
      'lb remove web g 10.0.0.8',
      'adopt g pooled',
      'reap h',
      'reap zz',
    ]);
    expect(store.all().map((x) => [x.name.slice(p.length + 1), x.state])).toEqual([['c', 'serving'], ['e', 'serving'], ['g', 'pooled']]);
    expect([...r.serving.get('web')!].map((x) => x.vm.name.slice(p.length + 1))).toEqual(['c', 'e']);
    // addresses: the adopted ones are held, the freed ones given again
    expect(addrs.forSpec('new', 'web', [])).toBe('10.0.0.2/24');
    expect(['10.0.0.4', '10.0.0.6', '10.0.0.8'].map((a) => [`${p}-c`, `${p}-e`, `${p}-g`].some((n) => addrs.address(n) === a))).toEqual([true, true, true]);
    expect(r.done).toHaveLength(9);
    store.close();
  });

  it('more serving replicas than maxReplicas allows: the extra ones are drained to the pool', async () => {
    const { store, pool, lb, calls, p } = setup('max', [
      ['a', 'serving', true],
      ['b', 'serving', true],
      ['c', 'serving', true],
    ]);
    const r = await reconcile({ store, pool, lb, maxReplicas: 2 });
    expect(calls.slice(3)).toEqual(['lb remove web c 10.0.0.4', 'release c', 'lb remove web b 10.0.0.3', 'release b']);
    expect(store.all().map((x) => [x.name.slice(p.length + 1), x.state])).toEqual([['a', 'serving'], ['b', 'pooled'], ['c', 'pooled']]);
    expect(r.serving.get('web')!.map((x) => x.vm.name.slice(p.length + 1))).toEqual(['a']);
    store.close();
  });
});
