// QEMU processes a QEMU-direct provisioner started, found again from /proc after the process that started
// them is gone (the controller's crash): a QEMU is ours when its QMP socket is in our private folder, so
// another user's or another folder's guests are never touched.

import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Vm } from './provisioner.ts';
import type { BackendRecovery } from './vm-backend.ts';

export interface QemuProcess {
  pid: number;
  /** -name */
  name: string;
  /** mem-path= of its memory-backend-file, when it has one */
  ramFile?: string;
  /** mac= of its NIC, when it has one */
  mac?: string;
}

/** The argv of a process, or undefined when it is gone or not readable. */
function argv(pid: number): string[] | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, -1);
  } catch {
    return undefined;
  }
}

/** The QEMU process of `pid` when it is one whose QMP socket lies in `dir` (else undefined). */
export function qemuProcess(pid: number, dir: string): QemuProcess | undefined {
  const a = argv(pid);
  if (!a) return undefined;
  const at = (flag: string) => {
    const i = a.indexOf(flag);
    return i >= 0 ? a[i + 1] : undefined;
  };
  const name = at('-name');
  const qmp = at('-qmp');
  if (!name || qmp !== `unix:${join(dir, `${name}.qmp`)},server=on,wait=off`) return undefined;
  const ramFile = /mem-path=([^,]+)/.exec(at('-object') ?? '')?.[1];
  const mac = a.map((x) => /(?:^|,)mac=([0-9a-f:]{17})/i.exec(x)?.[1]).find(Boolean);
  return { pid, name, ...(ramFile ? { ramFile } : {}), ...(mac ? { mac } : {}) };
}

/** Every running QEMU whose QMP socket lies in `dir`. */
export function qemuProcesses(dir: string): QemuProcess[] {
  const out: QemuProcess[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const p = qemuProcess(Number(e), dir);
    // a zombie has an empty cmdline: not found, as it should be
    if (p) out.push(p);
  }
  return out;
}

/** True while `pid` runs (a zombie counts as gone). */
export function alive(pid: number): boolean {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) [ZX] /s.test(st);
  } catch {
    return false;
  }
}

/** QEMU-direct's recovery: QEMU processes whose QMP socket is in the provisioner's folder (qemu-processes.ts). */
export class QemuDirectRecovery implements BackendRecovery {
  constructor(
    private readonly dir: string,
    private readonly ramDir: () => string | null,
    private readonly take: (vm: Vm, pid: number, mac: string | undefined) => Promise<boolean>,
    private readonly known: (name: string) => Vm | undefined,
    private readonly destroy: (vm: Vm) => Promise<void>,
    private readonly killPid: (pid: number) => Promise<void>,
  ) {}

  leftovers(prefix: string): Set<string> {
    const names = new Set(qemuProcesses(this.dir).map((p) => p.name).filter((n) => n.startsWith(prefix)));
    const suffix = /\.(qcow2|serial\.log|qmp|ctl)$/;
    for (const f of readdirSync(this.dir)) if (f.startsWith(prefix) && suffix.test(f)) names.add(f.replace(suffix, ''));
    const ram = this.ramDir();
    if (ram) for (const f of readdirSync(ram)) if (f.startsWith(`ciel-${prefix}`) && f.endsWith('.ram')) names.add(f.slice(5, -4));
    return names;
  }

  async adopt(vm: Vm): Promise<boolean> {
    const p = vm.pid !== undefined ? qemuProcess(vm.pid, this.dir) : undefined;
    const found = p?.name === vm.name ? p : qemuProcesses(this.dir).find((q) => q.name === vm.name);
    if (!found) return false;
    if (found.ramFile) vm.ramFile = found.ramFile;
    return this.take(vm, found.pid, found.mac);
  }

  async reap(name: string): Promise<void> {
    const vm = this.known(name);
    if (vm) return this.destroy(vm);
    for (const p of qemuProcesses(this.dir)) if (p.name === name) await this.killPid(p.pid);
    for (const ext of ['qcow2', 'serial.log', 'qmp', 'ctl']) rmSync(join(this.dir, `${name}.${ext}`), { force: true });
    const ram = this.ramDir();
    if (ram) rmSync(join(ram, `ciel-${name}.ram`), { force: true });
  }
}
