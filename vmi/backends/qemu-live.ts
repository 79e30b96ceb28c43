// Memory backend: a live QEMU guest; guest RAM is a shared host file (`-object memory-backend-file,share=on,mem-path=...`),
// mapped read-only here (mmap.ts); registers and pause/resume go through QMP: its socket, or libvirt's
// monitor passthrough for a libvirt domain (libvirt-live.ts opens it with a LibvirtQmp).
import { statSync } from 'node:fs';
import koffi from 'koffi';
import { mapFileReadOnly, type FileMapping } from './mmap.ts';
import { BadInputError, CielError, VmError } from '../../common/errors.ts';
import { guardPause, releasePause } from '../pause-guardian.ts';
import { QmpClient, QmpError, type QmpEvent, type QmpTransport, type RunStatus, type VcpuRegisters } from '../qmp.ts';
import type { GuestRegisters, MemoryBackend, PhysRange } from './backend.ts';
import { kernelRoot } from '../kernel-root.ts';

/** The guest is gone, was reset, or is in a state where its memory no longer means what it did. */
export class GuestStateError extends VmError {
  constructor(
    vm: string,
    readonly status: string,
    detail: string,
  ) {
    super(vm, detail);
  }
}

export type QemuMachine = 'pc' | 'q35';

/**
 * Where guest-physical RAM sits in the memory-backend file. QEMU puts the first `lowmem` bytes at gpa 0 and
 * the rest at gpa 4 GiB (after the PCI hole); in the file they are contiguous.
 * pc (i440fx): split when RAM >= 0xe0000000 (3584 MiB), lowmem 0xc0000000.
 * q35: split when RAM >= 0xb0000000 (2816 MiB), lowmem 0x80000000.
 */
export function qemuRamLayout(ramBytes: bigint, machine: QemuMachine = 'pc'): { gpa: bigint; fileOffset: bigint; length: bigint }[] {
  const [threshold, lowmem] = machine === 'pc' ? [0xe000_0000n, 0xc000_0000n] : [0xb000_0000n, 0x8000_0000n];
  if (ramBytes < threshold) return [{ gpa: 0n, fileOffset: 0n, length: ramBytes }];
  return [
    { gpa: 0n, fileOffset: 0n, length: lowmem },
    { gpa: 0x1_0000_0000n, fileOffset: lowmem, length: ramBytes - lowmem },
  ];
}

export interface QemuLiveOptions {
  /** the memory-backend file, e.g. /dev/shm/ciel-<name> */
  memFile: string;
  /** QMP unix socket (connected here), or */
  qmpSocket?: string;
  /** an open QMP transport (libvirt's passthrough); closed with the backend, also when open() fails */
  qmp?: QmpTransport;
  /** guest RAM size; default: the file's size */
  ramBytes?: bigint;
  machine?: QemuMachine;
  /** name for messages (default: the memory file) */
  vm?: string;
}

export interface PauseTiming {
  /** QMP stop round trip */
  stopMs: number;
  /** QMP cont round trip */
  contMs: number;
  /** from sending stop to cont answered: how long the guest was (at most) paused */
  pausedMs: number;
}

export class QemuLiveBackend implements MemoryBackend {
  readonly kind = 'qemu';
  private readonly map: FileMapping;
  private readonly rangesList: PhysRange[];
  private closed = false;
  private pausedAt = 0;
  private pauseStopMs = 0;
  /** set when QEMU reported a reset since open: memory contents are not the guest we opened */
  private resetReason: string | null = null;
  /**
   * set when QEMU reported a shutdown since open (the guest powered off, or QEMU was told to quit: a
   * signal, `quit`): QEMU is going away, unlike after a reset there is no guest to attach to again now
   */
  private shutdownReason: string | null = null;
  /** set when the QMP connection closed: QEMU exited */
  private goneReason: string | null = null;
  /** timing of the last pause()/resume() pair */
  lastPause: PauseTiming | null = null;
  readonly vm: string;

  private constructor(
    readonly qmp: QmpTransport,
    readonly memFile: string,
    map: FileMapping,
    layout: { gpa: bigint; fileOffset: bigint; length: bigint }[],
    vm: string,
  ) {
    this.map = map;
    this.vm = vm;
    this.rangesList = layout.map((r) => ({ gpa: r.gpa, length: r.length, host: map.host + r.fileOffset }));
    qmp.on('event', (e: QmpEvent) => {
      const what = `guest ${e.event.toLowerCase()} (${JSON.stringify(e.data ?? {})})`;
      if (e.event === 'RESET') this.resetReason ??= what;
      if (e.event === 'SHUTDOWN') this.shutdownReason ??= what;
    });
    // QEMU keeps no socket open once it exits: its RAM file then holds a dead guest's memory
    qmp.on('close', (why: string) => {
      this.goneReason ??= why;
    });
  }

  /** Throws GuestStateError when QEMU has exited or the guest was reset since open (cheap: no QMP round trip). */
  checkAlive(): void {
    this.assertOpen();
    // a transport without a connection to watch (libvirt) checks QEMU's pid here, and emits 'close'
    if (this.qmp.closed) this.goneReason ??= 'QEMU exited';
    if (this.goneReason) throw new GuestStateError(this.vm, 'gone', `QEMU is gone: ${this.goneReason}`);
    this.assertNotReset();
  }

  /** Map the memory file read-only and connect to QMP. */
  static async open(opts: QemuLiveOptions): Promise<QemuLiveBackend> {
    const vm = opts.vm ?? opts.memFile;
    let size: bigint;
    try {
      size = statSync(opts.memFile, { bigint: true }).size;
    } catch (e) {
      opts.qmp?.close();
      throw new BadInputError(opts.memFile, `guest memory file missing (${(e as Error).message}); is QEMU started with -object memory-backend-file,share=on,mem-path=...?`);
    }
    const ram = opts.ramBytes ?? size;
    const bad = (why: string) => {
      opts.qmp?.close();
      return new BadInputError(opts.memFile, why);
    };
    if (ram <= 0n) throw bad('guest memory file is empty');
    if (size < ram) throw bad(`guest memory file is ${size} bytes, smaller than the ${ram} bytes of guest RAM`);
    const layout = qemuRamLayout(ram, opts.machine ?? 'pc');
    if (!opts.qmp && !opts.qmpSocket) throw new CielError(`${vm}: neither a QMP socket nor a QMP transport`);
    const qmp = opts.qmp ?? (await QmpClient.connect(opts.qmpSocket!));
    let map: FileMapping;
    try {
      map = mapFileReadOnly(opts.memFile, 0, Number(ram));
    } catch (e) {
      qmp.close();
      throw e;
    }
    return new QemuLiveBackend(qmp, opts.memFile, map, layout, vm);
  }

  ranges(): PhysRange[] {
    this.assertOpen();
    return this.rangesList.map((r) => ({ ...r }));
  }

  memorySize(): bigint {
    return this.rangesList.reduce((s, r) => s + r.length, 0n);
  }

  /**
   * A Buffer over part of a range (no copy; reads see the live guest). `length` is capped at 1 GiB per view.
   * Valid until close().
   */
  view(range: PhysRange, offset = 0n, length?: bigint): Buffer {
    this.assertOpen();
    const len = length ?? range.length - offset;
    if (offset < 0n || len < 0n || offset + len > range.length) throw new RangeError('view outside the range');
    if (len > 1n << 30n) throw new RangeError('view larger than 1 GiB');
    if (len === 0n) return Buffer.alloc(0);
    return Buffer.from(koffi.view(range.host + offset, Number(len)) as ArrayBuffer);
  }

  /** QEMU's run state; throws GuestStateError when the guest is gone, reset or not runnable. */
  async status(): Promise<RunStatus> {
    this.assertOpen();
    this.assertNotReset();
    let st: RunStatus;
    try {
      st = await this.qmp.queryStatus();
    } catch (e) {
      throw this.gone(e);
    }
    if (!['running', 'paused', 'debug', 'prelaunch', 'suspended', 'save-vm', 'restore-vm', 'finish-migrate'].includes(st.status)) {
      throw new GuestStateError(this.vm, st.status, `guest is not running (QEMU status ${st.status})`);
    }
    return st;
  }

  /** CR3/CR4 of every vCPU. */
  async allRegisters(): Promise<{ vcpus: VcpuRegisters[]; ms: number }> {
    this.assertOpen();
    this.assertNotReset();
    try {
      return await this.qmp.registers();
    } catch (e) {
      throw this.gone(e);
    }
  }

  async registers(): Promise<GuestRegisters> {
    const { vcpus } = await this.allRegisters();
    // the kernel's own init_top_pgt, else a vCPU whose page tables map the kernel half (kernel-root.ts)
    const v = kernelRoot(this, vcpus);
    return { cr3: v.cr3, cr4: v.cr4 };
  }

  /**
   * Pause the vCPUs unless they already are: a VM an operator paused stays theirs to resume (false).
   * The pause guardian learns of the pause before QMP `stop`, so this process dying at any instant
   * leaves the VM running (vmi/pause-guardian.ts).
   */
  async pause(): Promise<boolean> {
    const st = await this.status();
    if (st.status !== 'running') return false;
    await guardPause(this.qmp.resumeVia);
    this.pausedAt = performance.now();
    try {
      this.pauseStopMs = await this.qmp.stop();
    } catch (e) {
      throw this.gone(e);
    }
    return true;
  }

  async resume(): Promise<void> {
    this.assertOpen();
    let contMs: number;
    try {
      contMs = await this.qmp.cont();
    } catch (e) {
      throw this.gone(e);
    }
    await releasePause(this.qmp.resumeVia).catch(() => {}); // worst case the guardian sends a harmless second cont
    if (this.pausedAt) {
      this.lastPause = { stopMs: this.pauseStopMs, contMs, pausedMs: performance.now() - this.pausedAt };
      this.pausedAt = 0;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.map.unmap();
    this.qmp.close();
  }

  private assertOpen(): void {
    if (this.closed) throw new CielError(`${this.vm}: backend is closed`);
  }

  private assertNotReset(): void {
    if (this.shutdownReason) throw this.shutDown();
    if (this.resetReason) throw new GuestStateError(this.vm, 'reset', `${this.resetReason} since the backend was opened; reopen it`);
  }

  private shutDown(): GuestStateError {
    return new GuestStateError(this.vm, 'shutdown', `QEMU is shutting the guest down: ${this.shutdownReason}`);
  }

  private gone(e: unknown): Error {
    if (this.shutdownReason) return this.shutDown();
    if (this.resetReason) return new GuestStateError(this.vm, 'reset', `${this.resetReason}; reopen the backend`);
    if (e instanceof QmpError && this.qmp.closed) return new GuestStateError(this.vm, 'gone', `QEMU is gone: ${e.message}`);
    return e as Error;
  }
}
