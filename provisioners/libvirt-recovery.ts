// Domains a libvirt provisioner defined, found again after the process that defined them is gone (the
// controller's crash): libvirt keeps them (persistent definitions), so they are listed by name through
// virsh. Only names carrying the caller's prefix (one per controller config) are ever touched, and only
// files of that name in the provisioner's own folder are removed.

import { execFileSync } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ToolError } from '../common/errors.ts';
import { pidFromFile } from './libvirt-daemon.ts';
import type { Vm } from './provisioner.ts';
import type { BackendRecovery } from './vm-backend.ts';

/** What a clone leaves in the folder: disk, serial log, XML, control socket, warm-restore image. */
const FILE = /\.(qcow2|serial\.log|xml|ctl|restore)$/;

export interface LibvirtRecoveryParts {
  uri: string;
  dir: string;
  virsh(...args: string[]): Promise<string>;
  /** Track a domain an earlier process defined, in its current run state (its NIC's MAC from its XML). */
  take(vm: Vm, state: 'running' | 'paused', mac: string | undefined): void;
  /** A VM this process tracks, by name. */
  known(name: string): Vm | undefined;
  destroy(vm: Vm): Promise<void>;
}

export class LibvirtRecovery implements BackendRecovery {
  constructor(private readonly p: LibvirtRecoveryParts) {}

  /** Domains (any run state) and files with names starting with `prefix`. Synchronous, as reconcile lists once. */
  leftovers(prefix: string): Set<string> {
    let listed: string;
    try {
      listed = execFileSync('virsh', ['-c', this.p.uri, 'list', '--all', '--name'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      const err = e as { stderr?: string; message: string };
      throw new ToolError('virsh', `-c ${this.p.uri} list --all --name: ${(err.stderr || err.message).toString().trim()}`);
    }
    const names = new Set(listed.split('\n').map((l) => l.trim()).filter((n) => n.startsWith(prefix)));
    for (const f of readdirSync(this.p.dir)) if (f.startsWith(prefix) && FILE.test(f)) names.add(f.replace(FILE, ''));
    return names;
  }

  async adopt(vm: Vm): Promise<boolean> {
    const state = (await this.p.virsh('domstate', vm.name).catch(() => 'gone')).trim();
    // a shut-off domain has no guest to serve from (and its pool entry would need a boot): not adopted
    if (state !== 'running' && state !== 'paused') return false;
    const xml = await this.p.virsh('dumpxml', vm.name);
    const mac = /<mac address='([0-9a-f:]{17})'/i.exec(xml)?.[1];
    this.p.take(vm, state, mac);
    return true;
  }

  async reap(name: string): Promise<void> {
    const vm = this.p.known(name);
    if (vm) return this.p.destroy(vm);
    const state = (await this.p.virsh('domstate', name).catch(() => 'gone')).trim();
    if (state === 'running' || state === 'paused') await this.p.virsh('destroy', name);
    if (state !== 'gone') await this.p.virsh('undefine', name);
    for (const f of readdirSync(this.p.dir)) if (f.startsWith(`${name}.`) && FILE.test(f) && f.replace(FILE, '') === name) rmSync(join(this.p.dir, f), { force: true });
  }
}

/**
 * Domains that run or are paused at `uri` (`virsh list --name` lists both), with their QEMU's pid when
 * libvirt's pid file says; null when libvirtd does not answer. Read-only (`ciel autoscale status`).
 */
export function runningDomains(uri: string): { name: string; pid: number }[] | null {
  let listed: string;
  try {
    listed = execFileSync('virsh', ['-c', uri, 'list', '--name'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch {
    return null;
  }
  return listed
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .map((name) => ({ name, pid: pidFromFile(`/run/libvirt/qemu/${name}.pid`) ?? 0 }));
}
