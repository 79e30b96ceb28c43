// Pass: kernel symbols go through a relocation slot table.
//
// Every use of an external global variable (and of an external function used as a value, not called)
// is replaced by a load from `@__ciel_slots[k]`, which the runtime fills with the symbol's guest
// address (System.map + KASLR slide; per-CPU offsets unslid). Uses inside constant expressions are
// rebuilt as instructions next to their user (in the incoming block for PHIs). The pointer stays a
// guest address, so comparisons such as `&pos->sibling != head` keep working; loads through it are
// translated by the g_map pass that runs after this one.
import { C, Linkage, Op, type NRef, type Ref } from './llvm/ffi.ts';
import { calledValue, instructionsOf, isCall, isDefinedFunction, nameOf, opcode, operands, printValue, type IRModule } from './llvm/ir.ts';
import type { Refusal, SlotEntry } from './report.ts';

export const SLOT_TABLE = '__ciel_slots';
export const SLOT_NAMES = '__ciel_slot_names';

/** Functions the runtime itself provides: never relocated, always callable. */
export const RUNTIME_ENTRY_POINTS = new Set(['g_map', 'ciel_trap']);

export interface RelocationResult {
  slots: SlotEntry[];
  /** the slot loads this pass inserted (local loads of our own table; not program loads) */
  slotLoads: Set<Ref>;
}

export function relocateExternalGlobals(m: IRModule, refusals: Refusal[]): RelocationResult {
  const externals = collectExternals(m, refusals);
  const slots: SlotEntry[] = [...externals.entries()].map(([g, index]) => ({
    index,
    name: nameOf(g),
    kind: C.IsAFunction(g) ? 'function' : 'variable',
  }));
  const slotLoads = new Set<Ref>();
  if (slots.length === 0) return { slots, slotLoads };

  const i64 = C.Int64TypeInContext(m.ctx) as Ref;
  const tableTy = C.ArrayType(i64, slots.length) as Ref;
  const table = C.AddGlobal(m.mod, tableTy, SLOT_TABLE) as Ref;
  C.SetInitializer(table, C.ConstNull(tableTy));
  C.SetLinkage(table, Linkage.External);
  C.SetAlignment(table, 64);
  addSlotNames(m, slots);

  const b = C.CreateBuilderInContext(m.ctx) as Ref;
  const contains = new Map<Ref, boolean>();
  const containsExternal = (v: Ref): boolean => {
    if (externals.has(v)) return true;
    if (!C.IsAConstant(v) || C.IsAGlobalVariable(v) || C.IsAFunction(v)) return false;
    const hit = contains.get(v);
    if (hit !== undefined) return hit;
    contains.set(v, false);
    const r = operands(v).some(containsExternal);
    contains.set(v, r);
    return r;
  };

  for (const fn of m.functions()) {
    if (!isDefinedFunction(fn)) continue;
    const fnName = nameOf(fn);
    const slotPtr = new Map<Ref, Ref>();
    const entry = C.GetEntryBasicBlock(fn) as Ref;
    let entryPoint: NRef = C.GetFirstInstruction(entry) as NRef;
    while (entryPoint && C.IsAAllocaInst(entryPoint)) entryPoint = C.GetNextInstruction(entryPoint) as NRef;

    // One slot load per (function, symbol), at the top of the entry block: it dominates every use.
    const pointerFor = (g: Ref): Ref => {
      let p = slotPtr.get(g);
      if (p) return p;
      const k = externals.get(g)!;
      C.PositionBuilderBefore(b, entryPoint!);
      const idx = [C.ConstInt(i64, 0n, 0), C.ConstInt(i64, BigInt(k), 0)];
      const gep = C.BuildInBoundsGEP2(b, tableTy, table, idx, 2, '') as Ref;
      const raw = C.BuildLoad2(b, i64, gep, `${nameOf(g)}.slot`) as Ref;
      C.SetAlignment(raw, 8);
      slotLoads.add(raw);
      p = C.BuildIntToPtr(b, raw, C.TypeOf(g), `${nameOf(g)}.reloc`) as Ref;
      slotPtr.set(g, p);
      return p;
    };

    const materialize = (v: Ref, before: Ref, user: Ref): Ref => {
      if (externals.has(v)) return pointerFor(v);
      if (!containsExternal(v)) return v;
      if (!C.IsAConstantExpr(v)) {
        refusals.push({ fn: fnName, inst: printValue(user), reason: 'constant aggregate refers to a kernel symbol' });
        return v;
      }
      const op = C.GetConstOpcode(v) as number;
      const ops = operands(v).map((o) => materialize(o, before, user));
      C.PositionBuilderBefore(b, before);
      const ty = C.TypeOf(v) as Ref;
      if (op === Op.GetElementPtr) {
        const build = C.IsInBounds(v) ? C.BuildInBoundsGEP2 : C.BuildGEP2;
        return build(b, C.GetGEPSourceElementType(v), ops[0], ops.slice(1), ops.length - 1, '') as Ref;
      }
      if (op >= Op.Trunc && op <= Op.BitCast) return C.BuildCast(b, op, ops[0], ty, '') as Ref;
      if (op === Op.AddrSpaceCast) return C.BuildCast(b, op, ops[0], ty, '') as Ref;
      if (op >= Op.Add && op <= Op.Xor) return C.BuildBinOp(b, op, ops[0], ops[1], '') as Ref;
      if (op === Op.ICmp) return C.BuildICmp(b, C.GetICmpPredicate(v), ops[0], ops[1], '') as Ref;
      if (op === Op.Select) return C.BuildSelect(b, ops[0], ops[1], ops[2], '') as Ref;
      refusals.push({ fn: fnName, inst: printValue(user), reason: `constant expression (opcode ${op}) over a kernel symbol` });
      return v;
    };

    for (const inst of instructionsOf(fn)) {
      if (slotLoads.has(inst)) continue;
      const isPhi = opcode(inst) === Op.PHI;
      const n = C.GetNumOperands(inst) as number;
      const calleeIndex = isCall(inst) ? n - 1 : -1;
      const perBlock = new Map<Ref, Ref>();
      for (let k = 0; k < n; k++) {
        const o = C.GetOperand(inst, k) as NRef;
        if (!o || !containsExternal(o)) continue;
        if (k === calleeIndex) continue; // a call of a kernel function: the verifier refuses it
        if (isPhi) {
          const bb = C.GetIncomingBlock(inst, k) as Ref;
          let nv = perBlock.get(bb);
          if (!nv) {
            nv = materialize(o, C.GetBasicBlockTerminator(bb) as Ref, inst);
            perBlock.set(bb, nv);
          }
          C.SetOperand(inst, k, nv);
        } else {
          C.SetOperand(inst, k, materialize(o, inst, inst));
        }
      }
    }
  }
  C.DisposeBuilder(b);

  // Declarations left without uses are dropped, so the object file does not import them.
  for (const g of externals.keys()) {
    if (C.GetFirstUse(g)) continue;
    if (C.IsAFunction(g)) C.DeleteFunction(g);
    else C.DeleteGlobal(g);
  }
  return { slots, slotLoads };
}

/** External symbols that need a slot, numbered in module order. */
function collectExternals(m: IRModule, refusals: Refusal[]): Map<Ref, number> {
  const externals = new Map<Ref, number>();
  for (const g of m.globals()) {
    const name = nameOf(g);
    if (!C.IsDeclaration(g) || name.startsWith('llvm.')) continue;
    if (C.IsThreadLocal(g)) {
      refusals.push({ fn: '<global>', inst: printValue(g), reason: 'thread-local kernel variable cannot be relocated' });
      continue;
    }
    if (C.GetFirstUse(g)) externals.set(g, externals.size);
  }
  for (const fn of m.functions()) {
    const name = nameOf(fn);
    if (!C.IsDeclaration(fn) || name.startsWith('llvm.') || RUNTIME_ENTRY_POINTS.has(name)) continue;
    if (usedAsValue(fn)) externals.set(fn, externals.size);
  }
  // A defined global whose initializer points at a kernel symbol cannot be fixed by a load.
  for (const g of m.globals()) {
    if (C.IsDeclaration(g)) continue;
    const init = C.GetInitializer(g) as NRef;
    if (init && refersTo(init, externals, new Set())) {
      refusals.push({ fn: '<global>', inst: printValue(g), reason: 'global initializer refers to a kernel symbol (cannot be relocated by a load)' });
    }
  }
  return externals;
}

function refersTo(c: Ref, externals: Map<Ref, number>, seen: Set<Ref>): boolean {
  if (externals.has(c)) return true;
  if (seen.has(c) || C.IsAGlobalVariable(c) || C.IsAFunction(c)) return false;
  seen.add(c);
  return operands(c).some((o) => refersTo(o, externals, seen));
}

/** A declared function whose address is used other than as the callee of a call. */
function usedAsValue(fn: Ref): boolean {
  for (let u = C.GetFirstUse(fn) as NRef; u; u = C.GetNextUse(u) as NRef) {
    const user = C.GetUser(u) as Ref;
    if (C.IsAInstruction(user) && isCall(user) && calledValue(user) === fn) {
      const nargs = C.GetNumArgOperands(user) as number;
      let asArg = false;
      for (let a = 0; a < nargs; a++) if (C.GetOperand(user, a) === fn) asArg = true;
      if (!asArg) continue;
    }
    return true;
  }
  return false;
}

function addSlotNames(m: IRModule, slots: SlotEntry[]): void {
  // The names travel inside the .so too, so the runtime can check a slot file belongs to it.
  const text = slots.map((s) => s.name).join('\0') + '\0';
  const init = C.ConstStringInContext(m.ctx, text, Buffer.byteLength(text), 1) as Ref;
  const g = C.AddGlobal(m.mod, C.TypeOf(init), SLOT_NAMES) as Ref;
  C.SetInitializer(g, init);
  C.SetGlobalConstant(g, 1);
  C.SetLinkage(g, Linkage.External);
}
