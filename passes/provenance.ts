// Which pointers are provably monitor-local (host memory the monitor owns)?
//
// A pointer is LOCAL when every path that defines it starts at an alloca, a global the module defines,
// or an argument of an exported entry point (the runtime passes host buffers there), and goes only
// through GEP / casts / phi / select / freeze (and inttoptr(ptrtoint(local) +- constant)). Anything
// else, in particular every pointer loaded from memory and every relocated kernel symbol, is not
// provably local: its loads get g_map, and stores through it are refused.
//
// Phi cycles are solved as a greatest fixpoint (start optimistic, only ever demote), and arguments of
// internal functions are LOCAL only when every direct call site passes a LOCAL value.
import { C, Linkage, Op, type NRef, type Ref } from './llvm/ffi.ts';
import { calledValue, instructionsOf, isCall, isDefinedFunction, opcode, type IRModule } from './llvm/ir.ts';

export class Provenance {
  private readonly phiState = new Map<Ref, boolean>();
  private readonly argLocal = new Map<Ref, boolean>();
  private readonly byvalParams = new Set<Ref>();
  private memo = new Map<Ref, boolean>();

  /**
   * @param nullIsLocal count NULL/undef as local. Right for the store check (NULL never points into guest
   * memory: a guarded `rec = full ? NULL : &out[i]` is fine); wrong for loads, where a NULL read must
   * go through g_map to become a contained fault instead of a crash.
   */
  constructor(
    private readonly module: IRModule,
    private readonly nullIsLocal = false,
  ) {
    this.solve();
  }

  isLocal(v: Ref): boolean {
    return this.evalLocal(v, 0);
  }

  private solve(): void {
    const fns = [...this.module.functions()].filter(isDefinedFunction);
    const internalCallable = new Set<Ref>();
    const byvalKind = C.GetEnumAttributeKindForName('byval', 5) as number;
    for (const fn of fns) {
      const linkage = C.GetLinkage(fn) as number;
      const internal = linkage === Linkage.Internal || linkage === Linkage.Private;
      const onlyCalled = internal && onlyUsedAsCallee(fn);
      if (onlyCalled) internalCallable.add(fn);
      const n = C.CountParams(fn) as number;
      // Exported functions receive host buffers from the runtime; internal ones start optimistic.
      // Address-taken internal functions may be called with anything: not local.
      for (let i = 0; i < n; i++) {
        const param = C.GetParam(fn, i) as Ref;
        // a byval parameter is the callee's own copy (the call site's read is translated instead)
        if (C.GetEnumAttributeAtIndex(fn, i + 1, byvalKind)) this.byvalParams.add(param);
        this.argLocal.set(param, !internal || onlyCalled || this.byvalParams.has(param));
      }
    }
    const insts = new Map(fns.map((fn) => [fn, instructionsOf(fn)] as const));
    for (const list of insts.values()) {
      for (const i of list) {
        const op = opcode(i);
        if (op === Op.PHI || op === Op.Select) this.phiState.set(i, true);
      }
    }
    // Demote until nothing changes: phis/selects first, then internal functions' arguments.
    for (let changed = true; changed; ) {
      changed = false;
      this.memo = new Map();
      for (const list of insts.values()) {
        for (const i of list) {
          if (!this.phiState.get(i)) continue;
          if (!this.mergeOf(i)) {
            this.phiState.set(i, false);
            changed = true;
            this.memo = new Map();
          }
        }
      }
      for (const list of insts.values()) {
        for (const i of list) {
          if (!isCall(i)) continue;
          const callee = calledValue(i);
          if (!internalCallable.has(callee)) continue;
          const nargs = C.GetNumArgOperands(i) as number;
          for (let a = 0; a < nargs; a++) {
            const param = C.GetParam(callee, a) as Ref;
            if (this.argLocal.get(param) && !this.byvalParams.has(param) && !this.evalLocal(C.GetOperand(i, a) as Ref, 0)) {
              this.argLocal.set(param, false);
              changed = true;
              this.memo = new Map();
            }
          }
        }
      }
    }
    this.memo = new Map();
  }

  private mergeOf(i: Ref): boolean {
    if (opcode(i) === Op.Select) {
      return this.evalLocal(C.GetOperand(i, 1) as Ref, 1) && this.evalLocal(C.GetOperand(i, 2) as Ref, 1);
    }
    const n = C.CountIncoming(i) as number;
    for (let k = 0; k < n; k++) if (!this.evalLocal(C.GetIncomingValue(i, k) as Ref, 1)) return false;
    return true;
  }

  private evalLocal(v: Ref, depth: number): boolean {
    const cached = this.memo.get(v);
    if (cached !== undefined) return cached;
    const r = this.compute(v, depth);
    this.memo.set(v, r);
    return r;
  }

  private compute(v: Ref, depth: number): boolean {
    if (depth > 64) return false;
    if (this.argLocal.has(v)) return this.argLocal.get(v)!;
    if (C.IsAAllocaInst(v)) return true;
    if (this.nullIsLocal && (C.IsAConstantPointerNull(v) || C.IsAUndefValue(v))) return true;
    if (C.IsAGlobalVariable(v)) return !C.IsDeclaration(v) && !C.IsThreadLocal(v);
    if (C.IsAFunction(v)) return !C.IsDeclaration(v);
    if (C.IsAConstantExpr(v)) {
      const op = C.GetConstOpcode(v) as number;
      return this.throughOp(v, op, depth);
    }
    if (C.IsAInstruction(v)) {
      const op = opcode(v);
      if (op === Op.PHI || op === Op.Select) return this.phiState.get(v) ?? false;
      return this.throughOp(v, op, depth);
    }
    return false;
  }

  private throughOp(v: Ref, op: number, depth: number): boolean {
    switch (op) {
      case Op.GetElementPtr:
      case Op.BitCast:
      case Op.AddrSpaceCast:
      case Op.Freeze:
        return this.evalLocal(C.GetOperand(v, 0) as Ref, depth + 1);
      case Op.IntToPtr:
        return this.intFromLocal(C.GetOperand(v, 0) as Ref, depth + 1);
      default:
        return false;
    }
  }

  /** An integer that is ptrtoint(local) possibly offset by constants. */
  private intFromLocal(v: Ref, depth: number): boolean {
    if (depth > 64) return false;
    const isInst = !!C.IsAInstruction(v);
    const isCE = !isInst && !!C.IsAConstantExpr(v);
    if (!isInst && !isCE) return false;
    const op = isInst ? opcode(v) : (C.GetConstOpcode(v) as number);
    if (op === Op.PtrToInt) return this.evalLocal(C.GetOperand(v, 0) as Ref, depth + 1);
    if (op === Op.Add || op === Op.Sub || op === Op.And || op === Op.Or) {
      const a = C.GetOperand(v, 0) as Ref;
      const b = C.GetOperand(v, 1) as Ref;
      if (C.IsAConstantInt(b)) return this.intFromLocal(a, depth + 1);
      if (C.IsAConstantInt(a) && op !== Op.Sub) return this.intFromLocal(b, depth + 1);
    }
    return false;
  }
}

/** True when every use of `fn` is as the callee of a direct call (its address never escapes). */
function onlyUsedAsCallee(fn: Ref): boolean {
  for (let u = C.GetFirstUse(fn) as NRef; u; u = C.GetNextUse(u) as NRef) {
    const user = C.GetUser(u) as Ref;
    if (!C.IsAInstruction(user) || !isCall(user) || calledValue(user) !== fn) return false;
    // fn passed as an argument to a call of itself or another function escapes too
    const nargs = C.GetNumArgOperands(user) as number;
    for (let a = 0; a < nargs; a++) if (C.GetOperand(user, a) === fn) return false;
  }
  return true;
}
