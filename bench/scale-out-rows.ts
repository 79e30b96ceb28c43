// The scale-out table's rows, shared by bench/scaling.ts (QEMU-direct) and bench/scaling-libvirt.ts:
// clone and boot times collected per method over the repetitions, reported as medians.

export interface ScaleOutRow {
  method: string;
  clone_ms: number;
  boot_ms: number;
  total_ms: number;
  note?: string;
}

/** Median (the mean of the middle two for an even count); NaN for none. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2) : NaN;
}

/** Clone/boot times per method, in the order the methods were first added. */
export class ScaleOutSamples {
  private readonly m = new Map<string, { clone: number[]; boot: number[]; note?: string }>();

  add(method: string, clone: number, boot: number, note?: string): void {
    const x = this.m.get(method) ?? { clone: [], boot: [] };
    x.clone.push(clone);
    x.boot.push(boot);
    if (note) x.note = note;
    this.m.set(method, x);
  }

  /** A method that could not be measured: one NaN row with the reason. */
  failed(method: string, note: string): void {
    this.m.set(method, { clone: [NaN], boot: [NaN], note });
  }

  note(method: string, note: string): void {
    const x = this.m.get(method);
    if (x) x.note = note;
  }

  rows(): ScaleOutRow[] {
    return [...this.m.entries()].map(([method, x]) => ({
      method,
      clone_ms: median(x.clone),
      boot_ms: median(x.boot),
      total_ms: median(x.clone.map((c, i) => c + x.boot[i]!)),
      ...(x.note ? { note: x.note } : {}),
    }));
  }
}
