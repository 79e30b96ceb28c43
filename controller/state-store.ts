// What the controller intends and what it started, kept in SQLite (better-sqlite3) so that a controller
// killed at any instant can be restarted and reconcile (reconcile.ts) instead of starting over. One file
// per config, under cacheDir('autoscale') (0600), named by a hash of the config file's real path. Every
// row is written *before* the action it announces (intent → cloned → booted → registering → serving →
// draining → pooled), so a crash leaves the last step that may have happened, never one that did not.

import { chmodSync, existsSync, realpathSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { cacheDir } from '../common/cache.ts';
import { CielError } from '../common/errors.ts';
import type { VmSpec } from '../provisioners/provisioner.ts';

/**
 * A replica's step. intent: name reserved, nothing made yet; cloned: disk made, QEMU may be booting;
 * booted: ready, not registered; registering: the balancer hook may have run; serving: registered;
 * draining: the balancer may have dropped it, release pending; pooled: released to the pool (paused).
 */
export const REPLICA_STATES = ['intent', 'cloned', 'booted', 'registering', 'serving', 'draining', 'pooled'] as const;
export type ReplicaState = (typeof REPLICA_STATES)[number];

export interface ReplicaRow {
  name: string;
  /** the service (container) it runs */
  container: string;
  /** the origin VM whose container it scales */
  origin: string;
  state: ReplicaState;
  spec: VmSpec;
  pid?: number;
  disk?: string;
  ramFile?: string;
  /** the provisioner.addresses entry it holds ("10.0.0.20/24") */
  address?: string;
  /** ms since the epoch of the last change */
  updated: number;
}

/** The state file is unreadable or not Ciel's (a typed error naming the file). */
export class StateStoreError extends CielError {
  constructor(
    readonly file: string,
    detail: string,
  ) {
    super(`${file}: ${detail}`);
  }
}

/** Where the state of `configFile` lives, and the prefix of every replica name it gives. */
export function stateLocation(configFile: string): { file: string; prefix: string } {
  const abs = resolve(configFile);
  const real = existsSync(abs) ? realpathSync(abs) : abs;
  const h = createHash('sha256').update(real).digest('hex').slice(0, 8);
  return { file: join(cacheDir('autoscale'), `${h}.sqlite`), prefix: `ciel-${h}` };
}

/** Schema migrations by PRAGMA user_version: index i brings version i to i+1. */
const MIGRATIONS = [
  `CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
   CREATE TABLE replicas (name TEXT PRIMARY KEY, container TEXT NOT NULL, origin TEXT NOT NULL, state TEXT NOT NULL,
     spec TEXT NOT NULL, pid INTEGER, disk TEXT, ram_file TEXT, address TEXT, updated INTEGER NOT NULL);`,
];

interface Raw {
  name: string;
  container: string;
  origin: string;
  state: string;
  spec: string;
  pid: number | null;
  disk: string | null;
  ram_file: string | null;
  address: string | null;
  updated: number;
}

export class StateStore {
  private constructor(
    private readonly db: Database.Database,
    readonly file: string,
    /** every replica name this config's controller gives starts with it (orphans are found by it) */
    readonly prefix: string,
  ) {}

  /** Open (or create, 0600) the state of `configFile`; readonly: never created or written. */
  static open(configFile: string, o: { readonly?: boolean } = {}): StateStore {
    const { file, prefix } = stateLocation(configFile);
    if (o.readonly && !existsSync(file)) return StateStore.empty(file, prefix);
    let db: Database.Database;
    try {
      db = new Database(file, o.readonly ? { readonly: true, fileMustExist: true } : {});
      if (!o.readonly) {
        chmodSync(file, 0o600);
        db.pragma('journal_mode = WAL');
        db.pragma('synchronous = FULL'); // a row is on disk before the action it announces
        const v = db.pragma('user_version', { simple: true }) as number;
        for (let i = v; i < MIGRATIONS.length; i++) db.transaction(() => { db.exec(MIGRATIONS[i]!); db.pragma(`user_version = ${i + 1}`); })();
      }
      db.prepare('SELECT count(*) FROM replicas').get();
    } catch (e) {
      throw new StateStoreError(file, `not a usable controller state: ${(e as Error).message}`);
    }
    return new StateStore(db, file, prefix);
  }

  /** No state yet (status before the first run): an in-memory, empty store. */
  private static empty(file: string, prefix: string): StateStore {
    const db = new Database(':memory:');
    db.exec(MIGRATIONS[0]!);
    return new StateStore(db, file, prefix);
  }

  /** The next replica number: never reused, across restarts. */
  nextSeq(): number {
    return this.db.transaction(() => {
      const row = this.db.prepare(`SELECT value FROM meta WHERE key = 'seq'`).get() as { value: string } | undefined;
      const n = (row ? Number(row.value) : 0) + 1;
      this.db.prepare(`INSERT INTO meta (key, value) VALUES ('seq', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`).run(String(n));
      return n;
    })();
  }

  /** Insert or replace a replica's row. */
  put(r: Omit<ReplicaRow, 'updated'>): void {
    this.db
      .prepare(`INSERT OR REPLACE INTO replicas (name, container, origin, state, spec, pid, disk, ram_file, address, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
      .run(r.name, r.container, r.origin, r.state, JSON.stringify(r.spec), r.pid ?? null, r.disk ?? null, r.ramFile ?? null, r.address ?? null, Date.now());
  }

  /** Move a replica to `state` (and record what is known by now). */
  set(name: string, state: ReplicaState, o: { pid?: number | undefined; disk?: string; ramFile?: string | undefined } = {}): void {
    const cur = this.get(name);
    if (!cur) throw new StateStoreError(this.file, `no replica ${name} in the state`);
    this.put({ ...cur, state, ...('pid' in o ? { pid: o.pid } : {}), ...(o.disk ? { disk: o.disk } : {}), ...('ramFile' in o ? { ramFile: o.ramFile } : {}) });
  }

  get(name: string): ReplicaRow | undefined {
    const r = this.db.prepare('SELECT * FROM replicas WHERE name = ?').get(name) as Raw | undefined;
    return r ? this.row(r) : undefined;
  }

  all(): ReplicaRow[] {
    return (this.db.prepare('SELECT * FROM replicas ORDER BY name').all() as Raw[]).map((r) => this.row(r));
  }

  delete(name: string): void {
    this.db.prepare('DELETE FROM replicas WHERE name = ?').run(name);
  }

  close(): void {
    this.db.close();
  }

  private row(r: Raw): ReplicaRow {
    if (!(REPLICA_STATES as readonly string[]).includes(r.state)) throw new StateStoreError(this.file, `replica ${r.name}: unknown state ${JSON.stringify(r.state)}`);
    let spec: VmSpec;
    try {
      spec = JSON.parse(r.spec) as VmSpec;
    } catch {
      throw new StateStoreError(this.file, `replica ${r.name}: spec is not JSON`);
    }
    return {
      name: r.name,
      container: r.container,
      origin: r.origin,
      state: r.state as ReplicaState,
      spec,
      updated: r.updated,
      ...(r.pid !== null ? { pid: r.pid } : {}),
      ...(r.disk !== null ? { disk: r.disk } : {}),
      ...(r.ram_file !== null ? { ramFile: r.ram_file } : {}),
      ...(r.address !== null ? { address: r.address } : {}),
    };
  }
}
