// Small, typed helpers over the raw C API: load/save modules, iterate, name and print values.
import { extname } from 'node:path';
import { BadInputError } from '../../common/errors.ts';
import { C, Op, TypeKind, type NRef, type Ref } from './ffi.ts';

export class IRModule {
  private constructor(
    readonly ctx: Ref,
    readonly mod: Ref,
    readonly source: string,
  ) {}

  /** Parse a .ll or .bc file (LLVM 14). Errors name the file and carry LLVM's message. */
  static load(path: string): IRModule {
    const ctx = C.ContextCreate() as Ref;
    const buf: NRef[] = [null];
    const msg: (string | null)[] = [null];
    if (C.CreateMemoryBufferWithContentsOfFile(path, buf, msg)) {
      C.ContextDispose(ctx);
      throw new BadInputError(path, `cannot read: ${msg[0]}`);
    }
    const m: NRef[] = [null];
    // ParseIRInContext takes ownership of the buffer, in success and failure alike.
    if (C.ParseIRInContext(ctx, buf[0], m, msg) || m[0] === null) {
      C.ContextDispose(ctx);
      throw new BadInputError(path, `not valid LLVM 14 IR: ${msg[0]}`);
    }
    return new IRModule(ctx, m[0], path);
  }

  /** Parse IR text held in memory (tests, generated code). */
  static parse(text: string, name = 'inline.ll'): IRModule {
    const ctx = C.ContextCreate() as Ref;
    const buf = C.CreateMemoryBufferWithMemoryRangeCopy(text, Buffer.byteLength(text), name) as Ref;
    const m: NRef[] = [null];
    const msg: (string | null)[] = [null];
    if (C.ParseIRInContext(ctx, buf, m, msg) || m[0] === null) {
      C.ContextDispose(ctx);
      throw new BadInputError(name, `not valid LLVM 14 IR: ${msg[0]}`);
    }
    return new IRModule(ctx, m[0], name);
  }

  /** Load another file into this module's context (to be linked in). */
  loadSibling(path: string): Ref {
    const buf: NRef[] = [null];
    const msg: (string | null)[] = [null];
    if (C.CreateMemoryBufferWithContentsOfFile(path, buf, msg)) throw new BadInputError(path, `cannot read: ${msg[0]}`);
    const m: NRef[] = [null];
    if (C.ParseIRInContext(this.ctx, buf[0], m, msg) || m[0] === null) {
      throw new BadInputError(path, `not valid LLVM 14 IR: ${msg[0]}`);
    }
    return m[0];
  }

  /** Link `other` (same context) into this module; `other` is consumed. */
  link(other: Ref, what: string): void {
    if (C.LinkModules2(this.mod, other)) throw new BadInputError(what, 'llvm link failed (symbol clash or type mismatch)');
  }

  verify(): string | null {
    const msg: (string | null)[] = [null];
    // action 2 = LLVMReturnStatusAction
    return C.VerifyModule(this.mod, 2, msg) ? (msg[0] ?? 'invalid module') : null;
  }

  toString(): string {
    return C.PrintModuleToString(this.mod) as string;
  }

  /** Write .bc when the path ends in .bc, textual IR otherwise. */
  write(path: string): void {
    if (extname(path) === '.bc') {
      if (C.WriteBitcodeToFile(this.mod, path)) throw new BadInputError(path, 'cannot write bitcode');
    } else {
      const msg: (string | null)[] = [null];
      if (C.PrintModuleToFile(this.mod, path, msg)) throw new BadInputError(path, `cannot write: ${msg[0]}`);
    }
  }

  dispose(): void {
    C.DisposeModule(this.mod);
    C.ContextDispose(this.ctx);
  }

  *functions(): Generator<Ref> {
    for (let fn = C.GetFirstFunction(this.mod) as NRef; fn; fn = C.GetNextFunction(fn) as NRef) yield fn;
  }

  *globals(): Generator<Ref> {
    for (let g = C.GetFirstGlobal(this.mod) as NRef; g; g = C.GetNextGlobal(g) as NRef) yield g;
  }
}

export function* blocks(fn: Ref): Generator<Ref> {
  for (let bb = C.GetFirstBasicBlock(fn) as NRef; bb; bb = C.GetNextBasicBlock(bb) as NRef) yield bb;
}

export function* instructions(bb: Ref): Generator<Ref> {
  for (let i = C.GetFirstInstruction(bb) as NRef; i; i = C.GetNextInstruction(i) as NRef) yield i;
}

/** All instructions of a function, collected first so callers may insert while walking. */
export function instructionsOf(fn: Ref): Ref[] {
  const out: Ref[] = [];
  for (const bb of blocks(fn)) for (const i of instructions(bb)) out.push(i);
  return out;
}

export function nameOf(v: Ref): string {
  const len = [0];
  return (C.GetValueName2(v, len) as string | null) ?? '';
}

export function printValue(v: Ref): string {
  return (C.PrintValueToString(v) as string).trim();
}

export function printType(t: Ref): string {
  return C.PrintTypeToString(t) as string;
}

export function opcode(inst: Ref): number {
  return C.GetInstructionOpcode(inst) as number;
}

export function operands(v: Ref): Ref[] {
  const n = C.GetNumOperands(v) as number;
  const out: Ref[] = [];
  for (let i = 0; i < n; i++) out.push(C.GetOperand(v, i) as Ref);
  return out;
}

export function isPointerType(t: Ref): boolean {
  return C.GetTypeKind(t) === TypeKind.Pointer;
}

export function isDefinedFunction(v: Ref): boolean {
  return !!C.IsAFunction(v) && !C.IsDeclaration(v);
}

export function calledValue(call: Ref): Ref {
  return C.GetCalledValue(call) as Ref;
}

/** Name of the directly called function, or null for indirect calls and inline asm. */
export function calleeName(call: Ref): string | null {
  const callee = calledValue(call);
  return C.IsAFunction(callee) ? nameOf(callee) : null;
}

export function isCall(inst: Ref): boolean {
  const op = opcode(inst);
  return op === Op.Call || op === Op.Invoke || op === Op.CallBr;
}

export function parentFunction(inst: Ref): Ref {
  return C.GetBasicBlockParent(C.GetInstructionParent(inst)) as Ref;
}
