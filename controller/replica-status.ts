// `ciel autoscale status`: the controller's state (state-store.ts) checked against what runs, read-only:
// nothing is started, stopped or connected to (a running controller holds its replicas' QMP sockets).
// A QEMU-direct replica runs when a QEMU process with its name has its QMP socket in the provisioner's
// folder (qemu-processes.ts); a libvirt replica runs when its domain is listed running or paused.

import { existsSync } from 'node:fs';
import { cacheDir } from '../common/cache.ts';
import { runningDomains } from '../provisioners/libvirt-recovery.ts';
import { qemuProcesses } from '../provisioners/qemu-processes.ts';
import { DEFAULT_LIBVIRT_URI, type AutoscaleConfig } from './config.ts';
import { StateStore, type ReplicaState } from './state-store.ts';

export interface ReplicaStatus {
  name: string;
  service: string;
  origin: string;
  /** the recorded step */
  state: ReplicaState;
  /** address without prefix, when it holds one */
  address?: string;
  pid?: number;
  /** its QEMU process (its libvirt domain) runs; null: not known (libvirtd did not answer) */
  running: boolean | null;
  /** what the next start of the controller does about it, when anything */
  next?: string;
}

export interface AutoscaleStatus {
  stateFile: string;
  /** every replica name of this config starts with it */
  prefix: string;
  replicas: ReplicaStatus[];
  /** replicas released to the pool */
  pool: string[];
  /** balancer entries: serving replicas; `certain` false: the hook may or may not have run (cut short) */
  balancer: { service: string; vm: string; address?: string; certain: boolean }[];
  /** QEMU processes (libvirt domains) named with this config's prefix that the state does not know */
  orphans: { name: string; pid: number }[];
}

const NEXT: Partial<Record<ReplicaState, string>> = {
  intent: 'rolled back (cut short before its disk was made)',
  cloned: 'rolled back (cut short while booting)',
  booted: 'registered with the balancer (scale-out finished)',
  registering: 'registered with the balancer (scale-out finished)',
  draining: 'removed from the balancer and pooled (drain finished)',
};

export function autoscaleStatus(cfg: AutoscaleConfig, configFile: string): AutoscaleStatus {
  const store = StateStore.open(configFile, { readonly: true });
  try {
    const p = cfg.provisioner;
    const dir = p?.kind === 'qemu-direct' ? (p.dir ?? cacheDir('qemu-direct')) : undefined;
    // what runs: QEMU processes of the provisioner's folder, or libvirt domains (null: libvirtd did not answer)
    const all = p?.kind === 'libvirt' ? runningDomains(p.uri ?? DEFAULT_LIBVIRT_URI) : dir && existsSync(dir) ? qemuProcesses(dir) : [];
    const procs = (all ?? []).filter((q) => q.name.startsWith(store.prefix));
    const rows = store.all();
    const replicas: ReplicaStatus[] = rows.map((r) => {
      const proc = procs.find((q) => q.name === r.name);
      const running = p && all !== null ? proc !== undefined : null;
      const next = running === false && r.state !== 'intent' ? 'removed (not running; from the balancer too if it may be there)' : NEXT[r.state];
      return {
        name: r.name,
        service: r.container,
        origin: r.origin,
        state: r.state,
        ...(r.address ? { address: r.address.split('/')[0]! } : {}),
        ...(proc ? { pid: proc.pid } : r.pid ? { pid: r.pid } : {}),
        running,
        ...(next ? { next } : {}),
      };
    });
    const known = new Set(rows.map((r) => r.name));
    return {
      stateFile: store.file,
      prefix: store.prefix,
      replicas,
      pool: replicas.filter((r) => r.state === 'pooled').map((r) => r.name),
      balancer: replicas
        .filter((r) => r.state === 'serving' || r.state === 'registering' || r.state === 'draining')
        .map((r) => ({ service: r.service, vm: r.name, ...(r.address ? { address: r.address } : {}), certain: r.state === 'serving' })),
      orphans: procs.filter((q) => !known.has(q.name)).map((q) => ({ name: q.name, pid: q.pid })),
    };
  } finally {
    store.close();
  }
}

/** The status as a person reads it. */
export function statusText(s: AutoscaleStatus): string {
  const lines = [`state: ${s.stateFile}`];
  if (!s.replicas.length) lines.push('replicas: none');
  else {
    lines.push('replicas:');
    for (const r of s.replicas) {
      const run = r.running === null ? '' : r.running ? `, running (pid ${r.pid})` : ', NOT running';
      lines.push(`  ${r.name}  service ${r.service}  origin ${r.origin || '-'}  ${r.state}${run}  address ${r.address ?? '-'}${r.next ? `  (next start: ${r.next})` : ''}`);
    }
  }
  lines.push(`pool: ${s.pool.length ? s.pool.join(', ') : 'empty'}`);
  lines.push(`balancer: ${s.balancer.length ? s.balancer.map((b) => `${b.service} → ${b.vm} ${b.address ?? '-'}${b.certain ? '' : ' (may or may not be registered)'}`).join('; ') : 'no entries'}`);
  if (s.orphans.length) lines.push(`orphans (no state; the next start ends them): ${s.orphans.map((o) => `${o.name} (pid ${o.pid})`).join(', ')}`);
  return lines.join('\n');
}
