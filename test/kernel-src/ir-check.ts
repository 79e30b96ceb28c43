// Checks on the textual LLVM IR (clang-14, typed pointers) of kernel-src monitors: the
// properties the Ciel pass/verifier relies on, checked before the pass ever runs.
// Used by test/kernel-src/compile.test.ts; by hand: import { checkIr } and print the report.

export interface IrFunction { name: string; header: string; params: string[]; body: string[] }

export interface IrReport {
  defines: IrFunction[];
  declares: string[];
  loads: number;
  volatileLoads: number;
  stores: number;
  asm: { text: string; registerOnly: boolean }[];
  addrspaces: string[];
  traps: string[];
  atomics: string[];
  tls: string[];
  badStores: string[];
  externalGlobals: string[];
}

const VALUE = /%\d+|%[A-Za-z_$][\w.$-]*(?![\w.$-]*\*)/g;

export function splitFunctions(ll: string): IrFunction[] {
  const out: IrFunction[] = [];
  const lines = ll.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^define\b.*?@([\w.$]+)\((.*)\).*\{$/.exec(lines[i]);
    if (!m) continue;
    const params = [...m[2].matchAll(/(%\d+|%[A-Za-z_][\w.]*)(?=\s*(,|$))/g)].map((x) => x[1]);
    const body: string[] = [];
    for (i++; i < lines.length && lines[i] !== '}'; i++) body.push(lines[i]);
    out.push({ name: m[1], header: lines[i - body.length - 1], params, body });
  }
  return out;
}

/**
 * Where may a pointer value come from? Follows GEP/bitcast/phi/select/inttoptr and integer
 * arithmetic back to its roots. Roots that are fine for a store: allocas, the function's
 * own parameters (only the exported entry points remain after inlining: `out`), internal
 * globals of the module. Anything reaching a load, a call result or an external (kernel)
 * global is guest-derived (or unknown) and must never be stored through.
 */
export function storeTargetProblems(fn: IrFunction, internalGlobals: Set<string>): string[] {
  const defs = new Map<string, string>();
  for (const line of fn.body) {
    const m = /^\s*(%[\w.$-]+)\s*=\s*(.*)$/.exec(line);
    if (m) defs.set(m[1], m[2]);
  }
  const params = new Set(fn.params);
  const labels = new Set<string>();
  for (const line of fn.body) {
    const m = /^([\w.$-]+):/.exec(line);
    if (m) labels.add(`%${m[1]}`);
  }
  const bad: string[] = [];

  // operands of an instruction: values and globals, not type names or block labels
  const operands = (d: string): string[] => [...d.matchAll(/(@[\w.$-]+|%[\w.$-]+)(\**)/g)]
    .filter((x) => !x[2] && !/^%"?(struct|union)\./.test(x[1]) && !labels.has(x[1]))
    .map((x) => x[1]);
  const pointerOperand = (d: string): string | undefined => /\*\s+(%[\w.$-]+|@[\w.$-]+)/.exec(d)?.[1];

  // mode 'ptr': the object a pointer points into (must be local);
  // mode 'int': an integer (offset/index) that must not come from guest memory. Loads
  // through local pointers are taken as local data (the monitor's own variables).
  const roots = (v: string, mode: 'ptr' | 'int', seen: Set<string>): string[] => {
    const key = `${mode}:${v}`;
    if (seen.has(key)) return [];
    seen.add(key);
    if (/^-?\d+$|^(true|false|null|undef|poison|zeroinitializer)$/.test(v)) return [];
    if (v.startsWith('@')) return internalGlobals.has(v) || mode === 'int' ? [] : [`external global ${v}`];
    if (params.has(v)) return [];
    const d = defs.get(v);
    if (!d) return [`undefined ${v}`];
    const op = /^(\w+)/.exec(d)?.[1] ?? '';
    switch (op) {
      case 'alloca': return [];
      case 'load': {
        if (mode === 'ptr') return [`loaded pointer ${v} = ${d}`];
        const p = pointerOperand(d);
        return p && roots(p, 'ptr', seen).length === 0 ? [] : [`guest-derived integer ${v} = ${d}`];
      }
      case 'call': case 'invoke': return [`call result ${v} = ${d}`];
      case 'getelementptr': {
        const base = pointerOperand(d);
        const rest = base ? d.slice(d.indexOf(base) + base.length) : '';
        return [...(base ? roots(base, 'ptr', seen) : [`unparsed gep ${d}`]),
          ...operands(rest).flatMap((o) => roots(o, 'int', seen))];
      }
      case 'bitcast': case 'addrspacecast': {
        const p = pointerOperand(d);
        return p ? roots(p, mode, seen) : [`unparsed ${d}`];
      }
      case 'ptrtoint': {
        const p = pointerOperand(d);
        return p ? roots(p, 'ptr', seen) : [`unparsed ${d}`];
      }
      case 'inttoptr':
        return operands(d).flatMap((o) => roots(o, 'int', seen));
      case 'phi':
        return [...d.matchAll(/\[\s*([^,\]]+?)\s*,/g)].map((x) => x[1].trim())
          .filter((x) => /^[%@]/.test(x)).flatMap((o) => roots(o, mode, seen));
      case 'select': {
        const ops = operands(d);
        return ops.slice(1).flatMap((o) => roots(o, mode, seen));
      }
      default:
        if (mode === 'ptr' && !/^(add|sub|or|and|xor|shl|lshr|ashr|mul)$/.test(op)) return [`${op} ${v}`];
        return operands(d).flatMap((o) => roots(o, mode, seen));
    }
  };

  for (const line of fn.body) {
    let ptr: string | undefined;
    const st = /^\s*store\s+(?:volatile\s+)?.*?,\s*[^,]*\*\s+(%[\w.$-]+|@[\w.$-]+|getelementptr.*?\)|bitcast.*?\))\s*(,|$)/.exec(line);
    if (st) ptr = st[1];
    const mem = /call\s+void\s+@llvm\.(memset|memcpy|memmove)[\w.]*\((?:[^,]*?\*)\s+(?:noalias\s+|nocapture\s+|nonnull\s+|align \d+\s+|writeonly\s+|dereferenceable\(\d+\)\s+)*(%[\w.$-]+|@[\w.$-]+)/.exec(line);
    if (mem) ptr = mem[2];
    if (/^\s*store\s/.test(line) && !ptr) {
      bad.push(`unparsed store: ${line.trim()}`);
      continue;
    }
    if (!ptr) continue;
    let problems: string[];
    if (ptr.startsWith('getelementptr') || ptr.startsWith('bitcast')) {
      const gs = [...ptr.matchAll(/@[\w.$-]+/g)].map((x) => x[0]);
      problems = gs.filter((g) => !internalGlobals.has(g)).map((g) => `external global ${g}`);
    } else {
      problems = roots(ptr, 'ptr', new Set());
    }
    if (problems.length) bad.push(`${fn.name}: ${line.trim()}  <=  ${problems.slice(0, 3).join('; ')}`);
  }
  return bad;
}

export function checkIr(ll: string): IrReport {
  const defines = splitFunctions(ll);
  const internalGlobals = new Set<string>();
  const externalGlobals: string[] = [];
  const tls: string[] = [];
  for (const m of ll.matchAll(/^(@[\w.$-]+)\s*=\s*(.*)$/gm)) {
    if (/\bexternal\b/.test(m[2])) externalGlobals.push(m[1]);
    else internalGlobals.add(m[1]);
    if (/thread_local/.test(m[2])) tls.push(m[1]);
  }
  const body = defines.flatMap((f) => f.body);
  const asm: IrReport['asm'] = [];
  for (const line of ll.split('\n')) {
    if (/^module asm/.test(line)) asm.push({ text: line, registerOnly: false });
    for (const m of line.matchAll(/asm\s+(?:sideeffect\s+)?(?:alignstack\s+)?(?:inteldialect\s+)?"((?:[^"\\]|\\.)*)",\s*"((?:[^"\\]|\\.)*)"/g)) {
      const [, tmpl, constraints] = m;
      const registerOnly = !/(^|,)=?\*?[^,]*m/.test(constraints.replace(/~\{memory\}/g, 'MEMCLOBBER'))
        && !/\*/.test(constraints) && !/%%?[gf]s|ud2|MEMCLOBBER/.test(tmpl + constraints.replace(/~\{memory\}/g, 'MEMCLOBBER'));
      asm.push({ text: `${tmpl} :: ${constraints}`, registerOnly });
    }
  }
  return {
    defines,
    declares: [...ll.matchAll(/^declare\b.*?@([\w.$]+)\(/gm)].map((m) => m[1]),
    loads: body.filter((l) => /=\s*load\s/.test(l)).length,
    volatileLoads: body.filter((l) => /=\s*load\s+volatile\s/.test(l)).length,
    stores: body.filter((l) => /^\s*store\s/.test(l)).length,
    asm,
    addrspaces: [...ll.matchAll(/addrspace\((\d+)\)/g)].map((m) => m[1]),
    traps: body.filter((l) => /\bud2\b|@llvm\.trap|@llvm\.debugtrap/.test(l)),
    atomics: body.filter((l) => /\b(atomicrmw|cmpxchg)\b|\bstore atomic\b/.test(l)),
    tls,
    badStores: defines.flatMap((f) => storeTargetProblems(f, internalGlobals)),
    externalGlobals,
  };
}
