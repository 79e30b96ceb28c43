// The controller's scale path as a process the crash test can SIGKILL (CIEL_FAULT_AT, controller/fault-point.ts):
// the same parts `ciel autoscale` wires together for a real run (the SQLite state, reconcile on start,
// DurableReplicas over the QEMU-direct pool and the hook balancer, ScaleActions), driven by a decision given
// on the command line instead of the policy loop (the loop needs a hot origin VM; what is under test is
// what a crash leaves behind and how a restart deals with it).
//
//   tsx test/controller/fault-driver.ts CONFIG reconcile
//   tsx test/controller/fault-driver.ts CONFIG out|in CONTAINER TO
//   tsx test/controller/fault-driver.ts CONFIG destroy
// Prints reconcile's lines and the actions' events on stdout (JSON lines).

import { loadAutoscaleConfig } from '../../controller/config.ts';
import { DurableReplicas } from '../../controller/durable-replicas.ts';
import { HookBalancer } from '../../controller/hook-balancer.ts';
import { reconcile } from '../../controller/reconcile.ts';
import { ReplicaAddresses } from '../../controller/replica-addresses.ts';
import { makeProvisioner, replicaSpec } from '../../controller/replica-provisioner.ts';
import { replicaName, ScaleActions } from '../../controller/scale-actions.ts';
import { StateStore } from '../../controller/state-store.ts';

const [config, mode, container, to] = process.argv.slice(2);
const out = (x: unknown) => process.stdout.write(`${JSON.stringify(x)}\n`);

async function main(): Promise<number> {
  const cfg = loadAutoscaleConfig(config!);
  const p = cfg.provisioner!;
  const maxReplicas = cfg.policy.maxReplicas ?? 10;
  const store = StateStore.open(config!);
  let durable: DurableReplicas | undefined;
  const pool = makeProvisioner(p, { keepOnExit: true, beforeBoot: (vm) => durable!.cloned(vm) });
  const addrs = new ReplicaAddresses(p.addresses ?? []);
  const lb = new HookBalancer(cfg.balancer!.hook, (b) => addrs.address(b.vm));
  durable = new DurableReplicas(store, pool, lb, addrs);
  const r = await reconcile({ store, pool, lb, addrs, maxReplicas });
  for (const l of r.done) out({ reconcile: l });
  if (mode === 'destroy') {
    for (const row of store.all()) {
      if (row.state !== 'pooled') await lb.removeBackend(row.container, { vm: row.name, container: row.container, ...(row.address ? { address: row.address.split('/')[0]! } : {}) });
      await pool.reap(row.name);
      store.delete(row.name);
    }
    return 0;
  }
  if (mode !== 'out' && mode !== 'in') return 0;
  const actions = new ScaleActions({
    provisioner: durable.provisioner,
    lb: durable.balancer,
    specFor: (c, name, origin) => durable!.specMade(replicaSpec(p, c, name, addrs.forSpec(name, c, pool.pooled())), origin),
    emit: out,
    clock: Date.now,
    nameFor: (c) => replicaName(c, store.nextSeq(), store.prefix),
    maxReplicas,
  });
  for (const [c, list] of r.serving) for (const { vm } of list) actions.adopt(c, vm);
  const from = actions.replicas(container!).length + 1;
  const action = mode === 'out' ? 'scale_out' : 'scale_in';
  await actions.carryOut({ type: 'decision', time: new Date().toISOString(), action, vm: 'origin', container: container!, from, to: Number(to), reason: 'fault test', resource: 'cpu', metric: 0, target: 0 });
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e: Error) => {
    process.stderr.write(`fault-driver: ${e.stack ?? e.message}\n`);
    process.exit(1);
  },
);
