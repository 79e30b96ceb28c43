// System.map: `<hex address> <type> <name>` per line, sorted by address.
//
// On x86-64 the per-CPU section is linked at address 0: symbols between `__per_cpu_start` and
// `__per_cpu_end` are offsets into each CPU's area (add `__per_cpu_offset[cpu]`), not addresses,
// and KASLR does not slide them. Absolute symbols (type A) are constants, never addresses.

import { readFileSync } from 'node:fs';
import { BadInputError } from '../../common/errors.ts';

export interface KernelSymbol {
  name: string;
  address: bigint;
  /** nm type letter: T/t text, D/d data, B/b bss, R/r rodata, A absolute, W/V weak, ... */
  type: string;
  /** true for per-CPU variables: the address is an offset into each CPU's per-CPU area */
  perCpu: boolean;
}

export class SystemMap {
  readonly symbols: KernelSymbol[];
  readonly perCpuStart: bigint;
  readonly perCpuEnd: bigint;
  private readonly byName = new Map<string, KernelSymbol[]>();

  constructor(
    readonly file: string,
    symbols: Omit<KernelSymbol, 'perCpu'>[],
  ) {
    const start = symbols.find((s) => s.name === '__per_cpu_start');
    const end = symbols.find((s) => s.name === '__per_cpu_end');
    if (!start || !end) {
      throw new BadInputError(file, 'no __per_cpu_start/__per_cpu_end symbols: not an x86-64 SMP kernel System.map');
    }
    this.perCpuStart = start.address;
    this.perCpuEnd = end.address;
    this.symbols = symbols.map((s) => ({
      name: s.name,
      address: s.address,
      type: s.type,
      perCpu: s.type !== 'A' && s.type !== 'a' && s.address >= start.address && s.address < end.address,
    }));
    for (const s of this.symbols) {
      const list = this.byName.get(s.name);
      if (list) list.push(s);
      else this.byName.set(s.name, [s]);
    }
  }

  /** All symbols of that name (static symbols may repeat). */
  all(name: string): KernelSymbol[] {
    return this.byName.get(name) ?? [];
  }

  /** The symbol, or undefined. With duplicates, prefers a global (upper-case type) one. */
  get(name: string): KernelSymbol | undefined {
    const list = this.byName.get(name);
    if (!list) return undefined;
    return list.find((s) => s.type !== s.type.toLowerCase()) ?? list[0];
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  /** The symbol; throws BadInputError naming it when missing. */
  lookup(name: string): KernelSymbol {
    const s = this.get(name);
    if (!s) throw new BadInputError(this.file, `no symbol '${name}'`);
    return s;
  }

  address(name: string): bigint {
    return this.lookup(name).address;
  }

  isPerCpu(name: string): boolean {
    return this.lookup(name).perCpu;
  }

  /** link-time address of `_text` (the start of the kernel image; KASLR slide = runtime _text - this) */
  get text(): bigint {
    return (this.get('_text') ?? this.lookup('_stext')).address;
  }

  get stext(): bigint {
    return (this.get('_stext') ?? this.lookup('_text')).address;
  }

  get size(): number {
    return this.symbols.length;
  }
}

const LINE = /^([0-9a-fA-F]{8,16})\s+([A-Za-z?-])\s+(\S+)/;

/** Parse System.map text. `file` is used in errors. */
export function parseSystemMap(text: string, file = 'System.map'): SystemMap {
  const symbols: Omit<KernelSymbol, 'perCpu'>[] = [];
  let bad = 0;
  const HEX = /^[0-9a-fA-F]{8,16}$/;
  for (const line of text.split('\n')) {
    if (!line) continue;
    // fast path: "<hex> <t> <name>" separated by single spaces
    const s1 = line.indexOf(' ');
    if (s1 >= 8 && line[s1 + 2] === ' ' && HEX.test(line.slice(0, s1))) {
      const end = line.indexOf('\t', s1 + 3); // modules' maps append "\t[mod]"
      symbols.push({ address: BigInt(`0x${line.slice(0, s1)}`), type: line[s1 + 1]!, name: line.slice(s1 + 3, end < 0 ? undefined : end).trim() });
      continue;
    }
    const m = LINE.exec(line);
    if (!m) {
      bad++;
      continue;
    }
    symbols.push({ address: BigInt(`0x${m[1]}`), type: m[2]!, name: m[3]! });
  }
  if (/The real System\.map is in/i.test(text) || (symbols.length < 100 && /-dbg/.test(text))) {
    throw new BadInputError(
      file,
      "this is Debian's stub System.map (it says the real one is in the linux-image-<release>-dbg package); " +
        'use the System.map from linux-image-<release>-dbg (ciel build --kernel RELEASE fetches it) or --system-map FILE',
    );
  }
  if (symbols.length === 0) {
    throw new BadInputError(file, `no symbols found (${bad} unparsable line(s)); expected lines like 'ffffffff81000000 T _text'`);
  }
  return new SystemMap(file, symbols);
}

export function loadSystemMap(file: string): SystemMap {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new BadInputError(file, `cannot read System.map: ${(e as Error).message}`);
  }
  return parseSystemMap(text, file);
}
