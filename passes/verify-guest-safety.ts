// Pass: refuse what cannot be made safe against a hostile guest, naming function and instruction.
//
// Guest memory is mapped read-only and every guest pointer may be garbage, so the monitor may only
// write memory it provably owns, may not run code that touches memory behind the pass's back (inline
// asm memory operands, gs/fs-relative per-CPU access, privileged or control-transfer instructions),
// and may not call anything but its own functions, a few harmless intrinsics and the runtime.
import { C, Op, TypeKind, type NRef, type Ref } from './llvm/ffi.ts';
import { calledValue, instructionsOf, isDefinedFunction, nameOf, opcode, printValue, type IRModule } from './llvm/ir.ts';
import type { Provenance } from './provenance.ts';
import { RUNTIME_ENTRY_POINTS } from './relocate-globals.ts';
import type { Refusal } from './report.ts';

/** Intrinsics that neither read nor write memory through their pointer arguments, or are handled. */
const HARMLESS_INTRINSICS = [
  'llvm.dbg.', 'llvm.lifetime.', 'llvm.assume', 'llvm.expect', 'llvm.objectsize', 'llvm.prefetch',
  'llvm.ctpop', 'llvm.ctlz', 'llvm.cttz', 'llvm.bswap', 'llvm.bitreverse', 'llvm.fshl', 'llvm.fshr',
  'llvm.umin', 'llvm.umax', 'llvm.smin', 'llvm.smax', 'llvm.abs', 'llvm.sadd.', 'llvm.uadd.', 'llvm.ssub.',
  'llvm.usub.', 'llvm.smul.', 'llvm.umul.', 'llvm.experimental.noalias.scope.decl', 'llvm.is.constant',
  'llvm.memcpy.', 'llvm.memmove.', 'llvm.memset.', 'llvm.memcpy.inline.', 'llvm.stacksave',
  'llvm.stackrestore', 'llvm.annotation', 'llvm.var.annotation', 'llvm.frameaddress', 'llvm.returnaddress',
  'llvm.trap', 'llvm.debugtrap', 'llvm.ubsantrap', 'llvm.donothing', 'llvm.sideeffect', 'llvm.pseudoprobe',
];

/** Inline asm text that faults in user mode, transfers control, patches code or uses segments. */
const FORBIDDEN_ASM =
  /%[gf]s\b|%[cd]r\d|\.(push)?section\b|\b(cli|sti|hlt|rdmsr|wrmsr|rdpmc|inb?|inw|inl|outb?|outw|outl|ins[bwl]?|outs[bwl]?|lgdt|lidt|lldt|ltr|invlpg|invpcid|wbinvd|invd|swapgs|sysret[ql]?|sysexit|iret[qdl]?|ud[012]|int3?|into|syscall|sysenter|vmcall|vmmcall|call[ql]?|jmp[ql]?|clac|stac|xsave\w*|xrstor\w*|monitor|mwait|lock)\b/;

export function verifyGuestSafety(m: IRModule, prov: Provenance, refusals: Refusal[]): void {
  for (const fn of m.functions()) {
    if (!isDefinedFunction(fn)) continue;
    const fnName = nameOf(fn);
    const refuse = (inst: Ref, reason: string) => refusals.push({ fn: fnName, inst: printValue(inst), reason });

    for (const inst of instructionsOf(fn)) {
      const op = opcode(inst);
      checkAddressSpaces(inst, refuse);
      switch (op) {
        case Op.Store:
          if (!prov.isLocal(C.GetOperand(inst, 1) as Ref)) refuse(inst, 'store through a pointer that may point into guest memory');
          break;
        case Op.AtomicRMW:
        case Op.AtomicCmpXchg:
          if (!prov.isLocal(C.GetOperand(inst, 0) as Ref)) refuse(inst, `${op === Op.AtomicRMW ? 'atomicrmw' : 'cmpxchg'} on a pointer that may point into guest memory`);
          break;
        case Op.CallBr:
          refuse(inst, 'asm goto (static keys / alternatives) cannot run outside the kernel; use a shim header');
          break;
        case Op.Invoke:
          refuse(inst, 'invoke (exceptions) is not supported');
          break;
        case Op.Call:
          checkCall(inst, prov, refuse);
          break;
      }
    }
  }
}

function checkCall(inst: Ref, prov: Provenance, refuse: (inst: Ref, reason: string) => void): void {
  const callee = calledValue(inst);
  if (C.IsAInlineAsm(callee)) {
    checkInlineAsm(inst, refuse);
    return;
  }
  if (!C.IsAFunction(callee)) {
    refuse(inst, 'indirect call (a guest function pointer can never be called)');
    return;
  }
  const name = nameOf(callee);
  if (!C.IsDeclaration(callee) || RUNTIME_ENTRY_POINTS.has(name)) return;
  if (!name.startsWith('llvm.')) {
    refuse(inst, `call to undefined function '${name}' (kernel or libc code cannot run here; write a C replacement)`);
    return;
  }
  if (!HARMLESS_INTRINSICS.some((p) => name === p || name.startsWith(p))) {
    refuse(inst, `intrinsic '${name}' may read or write memory behind the pass (compile with -fno-vectorize -fno-slp-vectorize)`);
    return;
  }
  // The destination of memset/memcpy/memmove is a store.
  if (/^llvm\.(memset|memcpy|memmove)\./.test(name) && !prov.isLocal(C.GetOperand(inst, 0) as Ref)) {
    refuse(inst, `${name.split('.')[1]} destination may point into guest memory`);
  }
}

function checkInlineAsm(inst: Ref, refuse: (inst: Ref, reason: string) => void): void {
  // LLVM 14's C API has no InlineAsm accessors; the printed form is `asm [sideeffect] "text", "constraints"`.
  const printed = printValue(inst);
  const match = /\basm\s+(?:sideeffect\s+)?(?:alignstack\s+)?(?:inteldialect\s+)?(?:unwind\s+)?"((?:[^"\\]|\\.)*)",\s*"((?:[^"\\]|\\.)*)"/.exec(printed);
  if (!match) {
    refuse(inst, 'inline asm that could not be parsed');
    return;
  }
  const [, text, constraints] = match;
  const parts = constraints.split(',').filter((c) => !c.startsWith('~'));
  if (parts.some((c) => c.includes('*'))) {
    refuse(inst, 'inline asm with a memory operand (it would read or write guest memory behind g_map)');
  } else if (FORBIDDEN_ASM.test(text)) {
    refuse(inst, `inline asm '${text}' uses gs/fs, privileged or control-transfer instructions`);
  }
}

function checkAddressSpaces(inst: Ref, refuse: (inst: Ref, reason: string) => void): void {
  const types = [C.TypeOf(inst) as Ref];
  const n = C.GetNumOperands(inst) as number;
  for (let k = 0; k < n; k++) {
    const o = C.GetOperand(inst, k) as NRef;
    if (o && !C.IsABasicBlock(o)) types.push(C.TypeOf(o) as Ref);
  }
  for (const t of types) {
    if (C.GetTypeKind(t) === TypeKind.Pointer && (C.GetPointerAddressSpace(t) as number) !== 0) {
      refuse(inst, `non-zero address space ${C.GetPointerAddressSpace(t)} (gs/fs-relative per-CPU access)`);
      return;
    }
  }
}

