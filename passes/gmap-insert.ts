// Pass: g_map before every guest read (paper 001, sec. 4.2).
//
// For each load (plain, volatile, atomic) whose pointer is not provably local:
//     %v = load T, T* %p          becomes      %t = call i8* @g_map(i8* %p.i8, i64 sizeof(T), i64* %ciel.budget)
//                                              %v = load T, T* %t.T
// The source of llvm.memcpy / llvm.memmove and byval call arguments are translated the same way, with
// the copy's length. g_map returns a host pointer valid for `size` bytes (page-crossing reads are
// assembled by the runtime), or ends the exported call with an error naming the guest address.
// llvm.trap and friends become a call to ciel_trap, which ends the call with an error instead of SIGILL.
//
// %ciel.budget is a per-function local copy of the runtime's access budget (@ciel_budget): loaded at
// entry, written back before every return and around calls to other functions. After the fast path is
// inlined it is promoted to a register, so counting each access costs no memory round trip.
import { C, Op, type NRef, type Ref } from './llvm/ffi.ts';
import { calledValue, instructionsOf, isCall, isDefinedFunction, nameOf, opcode, type IRModule } from './llvm/ir.ts';
import type { Provenance } from './provenance.ts';

export interface GMapCounts {
  loadsTotal: number;
  translated: number;
  skippedLocal: number;
  memcpySources: number;
  byvalArgs: number;
  trapsReplaced: number;
}

export function insertGMap(m: IRModule, prov: Provenance, ignore: Set<Ref>): GMapCounts {
  const counts: GMapCounts = { loadsTotal: 0, translated: 0, skippedLocal: 0, memcpySources: 0, byvalArgs: 0, trapsReplaced: 0 };
  const i8p = C.PointerType(C.Int8TypeInContext(m.ctx), 0) as Ref;
  const i64 = C.Int64TypeInContext(m.ctx) as Ref;
  const i64p = C.PointerType(i64, 0) as Ref;
  const gmapTy = C.FunctionType(i8p, [i8p, i64, i64p], 3, 0) as Ref;
  const gmap = (C.GetNamedFunction(m.mod, 'g_map') as Ref | null) ?? (C.AddFunction(m.mod, 'g_map', gmapTy) as Ref);
  const trapTy = C.FunctionType(C.VoidTypeInContext(m.ctx), [], 0, 0) as Ref;
  let trap: Ref | null = null;
  const td = C.CreateTargetData(C.GetDataLayoutStr(m.mod)) as Ref;
  const byvalKind = C.GetEnumAttributeKindForName('byval', 5) as number;
  const b = C.CreateBuilderInContext(m.ctx) as Ref;

  let globalBudget: Ref | null = null;
  let budget: Ref | null = null; // the current function's %ciel.budget

  /** Insert g_map(ptr, size, budget) before `inst` and return the translated pointer, typed like `ptr`. */
  const translate = (inst: Ref, ptr: Ref, size: Ref): Ref => {
    if (!budget) {
      const entry = C.GetFirstInstruction(C.GetEntryBasicBlock(C.GetBasicBlockParent(C.GetInstructionParent(inst)))) as Ref;
      C.PositionBuilderBefore(b, entry);
      budget = C.BuildAlloca(b, i64, 'ciel.budget') as Ref;
    }
    C.PositionBuilderBefore(b, inst);
    const raw = C.BuildPointerCast(b, ptr, i8p, '') as Ref;
    const mapped = C.BuildCall2(b, gmapTy, gmap, [raw, size, budget], 3, '') as Ref;
    return C.BuildPointerCast(b, mapped, C.TypeOf(ptr), '') as Ref;
  };

  /** Sync %ciel.budget with @ciel_budget: in at entry and after calls, out before returns and calls. */
  const syncBudget = (fn: Ref, local: Ref) => {
    if (!globalBudget) {
      globalBudget = C.AddGlobal(m.mod, i64, 'ciel_budget') as Ref;
      C.SetVisibility(globalBudget, 1); // hidden: defined in rt.c in the same shared object
    }
    const load = (from: Ref, to: Ref) => {
      const v = C.BuildLoad2(b, i64, from, '') as Ref;
      C.SetAlignment(v, 8);
      C.SetAlignment(C.BuildStore(b, v, to), 8);
    };
    const entry = C.GetEntryBasicBlock(fn) as Ref;
    let after: NRef = C.GetNextInstruction(local) as NRef;
    while (after && C.IsAAllocaInst(after)) after = C.GetNextInstruction(after) as NRef;
    C.PositionBuilderBefore(b, after ?? (C.GetBasicBlockTerminator(entry) as Ref));
    load(globalBudget, local);
    for (const inst of instructionsOf(fn)) {
      if (opcode(inst) === Op.Ret) {
        C.PositionBuilderBefore(b, inst);
        load(local, globalBudget);
      } else if (isCall(inst)) {
        const callee = calledValue(inst);
        if (C.IsAFunction(callee) && (C.IsDeclaration(callee) || callee === gmap)) continue; // intrinsics, runtime
        C.PositionBuilderBefore(b, inst);
        load(local, globalBudget);
        const next = C.GetNextInstruction(inst) as NRef;
        if (next) {
          C.PositionBuilderBefore(b, next);
          load(globalBudget, local);
        }
      }
    }
  };

  for (const fn of m.functions()) {
    if (!isDefinedFunction(fn)) continue;
    budget = null;
    for (const inst of instructionsOf(fn)) {
      const op = opcode(inst);
      if (op === Op.Load) {
        if (ignore.has(inst)) continue;
        counts.loadsTotal++;
        const ptr = C.GetOperand(inst, 0) as Ref;
        if (prov.isLocal(ptr)) {
          counts.skippedLocal++;
          continue;
        }
        const size = C.StoreSizeOfType(td, C.TypeOf(inst)) as bigint | number;
        C.SetOperand(inst, 0, translate(inst, ptr, C.ConstInt(i64, BigInt(size), 0) as Ref));
        counts.translated++;
      } else if (op === Op.Call) {
        const callee = calledValue(inst);
        if (!C.IsAFunction(callee)) continue;
        const name = nameOf(callee);
        if (/^llvm\.(memcpy|memmove)\./.test(name)) {
          const src = C.GetOperand(inst, 1) as Ref;
          if (prov.isLocal(src)) continue;
          C.PositionBuilderBefore(b, inst);
          const len = C.BuildZExtOrBitCast(b, C.GetOperand(inst, 2), i64, '') as Ref;
          C.SetOperand(inst, 1, translate(inst, src, len));
          counts.memcpySources++;
        } else if (name === 'llvm.trap' || name === 'llvm.debugtrap' || name === 'llvm.ubsantrap') {
          trap ??= (C.GetNamedFunction(m.mod, 'ciel_trap') as Ref | null) ?? (C.AddFunction(m.mod, 'ciel_trap', trapTy) as Ref);
          C.PositionBuilderBefore(b, inst);
          C.BuildCall2(b, trapTy, trap, [], 0, '');
          C.InstructionEraseFromParent(inst);
          counts.trapsReplaced++;
        } else {
          const nargs = C.GetNumArgOperands(inst) as number;
          for (let a = 0; a < nargs; a++) {
            // attribute index of argument a is a + 1
            const attr = (C.GetCallSiteEnumAttribute(inst, a + 1, byvalKind) ?? C.GetEnumAttributeAtIndex(callee, a + 1, byvalKind)) as Ref | null;
            if (!attr) continue;
            const arg = C.GetOperand(inst, a) as Ref;
            if (prov.isLocal(arg)) continue;
            const ty = C.GetTypeAttributeValue(attr) as Ref;
            const size = C.ConstInt(i64, BigInt(C.StoreSizeOfType(td, ty) as bigint | number), 0) as Ref;
            C.SetOperand(inst, a, translate(inst, arg, size));
            counts.byvalArgs++;
          }
        }
      }
    }
    if (budget) syncBudget(fn, budget);
  }
  C.DisposeBuilder(b);
  C.DisposeTargetData(td);
  if (!C.GetFirstUse(gmap)) C.DeleteFunction(gmap);
  return counts;
}
