// The operator's live view: one table per VM, busiest container first.
// On a TTY the block is redrawn in place (cursor up + clear line); elsewhere (pipe, file, CI log)
// each update is printed as plain lines without escape sequences.

import { printable } from '../common/guest-text.ts';
import type { ContainerRates, VmRates } from '../vmi/rates.ts';
import { formatBytes, formatPercent, formatRate } from './units.ts';

export interface TableOutput {
  write(s: string): unknown;
  isTTY?: boolean;
  columns?: number;
  rows?: number;
}

export interface LiveTableOptions {
  /** force TTY (in-place) or plain mode; default: out.isTTY */
  tty?: boolean;
  /** cut lines to this width on a TTY; default: out.columns, read at every redraw (follows resizes) */
  columns?: number;
  /** at most this many lines on a TTY (cursor-up cannot go past the top of the screen); default: out.rows */
  rows?: number;
}

const HEADERS = ['CONTAINER', 'CPU %', 'MEM', 'DISK READ', 'DISK WRITE', 'NET RX', 'NET TX'];
/** column alignment: the name left, numbers right */
const RIGHT = [false, true, true, true, true, true, true];

const ESC = '\x1b[';

/** what the table shows for a container: its name, else the 12-character short id of a Docker id, else its
 *  cgroup path -- every one of them made printable and cut to 40 characters (they come from the guest) */
export function displayName(c: Pick<ContainerRates, 'id' | 'name' | 'cgroup'>): string {
  if (c.name) return printable(c.name.replace(/^\//, ''), 40);
  if (/^[0-9a-f]{64}$/.test(c.id)) return c.id.slice(0, 12);
  return printable(c.id || c.cgroup, 40);
}

/** busiest first; containers without a rate yet last; ties by name so the order is stable */
export function sortByCpu(cs: ContainerRates[]): ContainerRates[] {
  return [...cs].sort((a, b) => {
    const x = a.cpuPercent ?? -1;
    const y = b.cpuPercent ?? -1;
    if (x !== y) return y - x;
    return displayName(a).localeCompare(displayName(b));
  });
}

/** The table of one VM as lines (no trailing newline, no escapes). */
export function renderVm(r: VmRates): string[] {
  const title =
    `VM ${r.vm || '(unnamed)'}  ${r.time}  ${r.containers.length} container(s)` +
    (r.elapsedSeconds === null ? '  (rates from the next sample on)' : `  over ${r.elapsedSeconds.toFixed(3)} s`);
  const rows = sortByCpu(r.containers).map((c) => [
    displayName(c),
    formatPercent(c.cpuPercent),
    formatBytes(c.memoryBytes),
    formatRate(c.diskReadBps),
    formatRate(c.diskWriteBps),
    formatRate(c.netRxBps),
    formatRate(c.netTxBps),
  ]);
  const widths = HEADERS.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const fmt = (cells: string[]) =>
    cells
      .map((cell, i) => (RIGHT[i] ? cell.padStart(widths[i]) : cell.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return [title, fmt(HEADERS), ...rows.map(fmt)];
}

/** All VMs, sorted by VM name, separated by a blank line. */
export function renderAll(vms: Iterable<VmRates>): string[] {
  const sorted = [...vms].sort((a, b) => a.vm.localeCompare(b.vm));
  const lines: string[] = [];
  sorted.forEach((r, i) => {
    if (i > 0) lines.push('');
    lines.push(...renderVm(r));
  });
  return lines;
}

export class LiveTable {
  private readonly latest = new Map<string, VmRates>();
  private drawnLines = 0;
  readonly tty: boolean;

  constructor(
    private readonly out: TableOutput,
    private readonly opts: LiveTableOptions = {},
  ) {
    this.tty = opts.tty ?? out.isTTY === true;
  }

  /** Show the newest rates of one VM. TTY: redraws the whole block in place. Plain: prints this VM's table. */
  update(r: VmRates): void {
    this.latest.set(r.vm, r);
    if (!this.tty) {
      this.out.write(renderVm(r).join('\n') + '\n\n');
      return;
    }
    this.out.write(this.frame(renderAll(this.latest.values())));
  }

  /** Forget a VM (removed from the configuration); redraws on a TTY. */
  remove(vm: string): void {
    if (!this.latest.delete(vm)) return;
    if (this.tty) this.out.write(this.frame(renderAll(this.latest.values())));
  }

  /** The escape sequence + text that replaces the previously drawn block with `lines`. */
  private frame(all: string[]): string {
    const columns = this.opts.columns ?? this.out.columns;
    const rows = this.opts.rows ?? this.out.rows;
    const cut = columns && columns > 0 ? (l: string) => l.slice(0, columns - 1) : (l: string) => l;
    let lines = all;
    if (rows && rows > 2 && lines.length > rows - 1) {
      lines = [...all.slice(0, rows - 2), `... ${all.length - (rows - 2)} more line(s): enlarge the terminal`];
    }
    let s = '';
    // back to the first column of the first line drawn last time
    if (this.drawnLines > 0) s += `\r${ESC}${this.drawnLines}A`;
    for (const l of lines) s += `${ESC}2K${cut(l)}\n`;
    // the new block may be shorter than the old one: clear what is left below
    s += `${ESC}J`;
    this.drawnLines = lines.length;
    return s;
  }
}
