// The subset of LLVM-14's C API (libLLVM-14.so) that the passes and the compiler use, bound through koffi.
// Why not llvm-bindings: it cannot iterate or rewrite existing IR (see README). Every LLVM reference
// (module, value, type, builder, ...) is an opaque pointer, which koffi 3 represents as a BigInt;
// NULL comes back as null.
import koffi from 'koffi';
import { existsSync } from 'node:fs';
import { ToolError } from '../../common/errors.ts';

export type Ref = bigint;
export type NRef = bigint | null;

const CANDIDATES = [
  process.env.CIEL_LIBLLVM,
  '/usr/lib/llvm-14/lib/libLLVM-14.so.1',
  '/usr/lib/x86_64-linux-gnu/libLLVM-14.so.1',
  '/usr/lib/llvm-14/lib/libLLVM-14.so',
].filter((p): p is string => !!p);

function loadLibLLVM() {
  const path = CANDIDATES.find((p) => existsSync(p));
  if (!path) {
    throw new ToolError('libLLVM-14', `not found (tried ${CANDIDATES.join(', ')}); install it: apt-get install libllvm14`);
  }
  return koffi.load(path);
}

const lib = loadLibLLVM();
const disposeMessage = lib.func('void LLVMDisposeMessage(void *msg)');
// Strings LLVM allocates for us (LLVMPrint*, error messages): copied into JS, then freed.
koffi.disposable('LLVMMessage', 'const char *', disposeMessage);

const f = (decl: string) => lib.func(decl);

/** Raw C API functions. Names follow the C API exactly, without the LLVM prefix. */
export const C = {
  // contexts, buffers, modules
  ContextCreate: f('void *LLVMContextCreate()'),
  ContextDispose: f('void LLVMContextDispose(void *c)'),
  CreateMemoryBufferWithContentsOfFile: f(
    'int LLVMCreateMemoryBufferWithContentsOfFile(const char *path, _Out_ void **buf, _Out_ LLVMMessage *msg)',
  ),
  CreateMemoryBufferWithMemoryRangeCopy: f(
    'void *LLVMCreateMemoryBufferWithMemoryRangeCopy(const char *data, size_t len, const char *name)',
  ),
  ParseIRInContext: f('int LLVMParseIRInContext(void *c, void *buf, _Out_ void **m, _Out_ LLVMMessage *msg)'),
  ModuleCreateWithNameInContext: f('void *LLVMModuleCreateWithNameInContext(const char *name, void *c)'),
  DisposeModule: f('void LLVMDisposeModule(void *m)'),
  GetModuleContext: f('void *LLVMGetModuleContext(void *m)'),
  PrintModuleToString: f('LLVMMessage LLVMPrintModuleToString(void *m)'),
  PrintModuleToFile: f('int LLVMPrintModuleToFile(void *m, const char *path, _Out_ LLVMMessage *msg)'),
  WriteBitcodeToFile: f('int LLVMWriteBitcodeToFile(void *m, const char *path)'),
  VerifyModule: f('int LLVMVerifyModule(void *m, int action, _Out_ LLVMMessage *msg)'),
  GetDataLayoutStr: f('const char *LLVMGetDataLayoutStr(void *m)'),
  SetDataLayout: f('void LLVMSetDataLayout(void *m, const char *dl)'),
  GetTarget: f('const char *LLVMGetTarget(void *m)'),
  SetTarget: f('void LLVMSetTarget(void *m, const char *triple)'),
  LinkModules2: f('int LLVMLinkModules2(void *dest, void *src)'),
  CreateTargetData: f('void *LLVMCreateTargetData(const char *dl)'),
  DisposeTargetData: f('void LLVMDisposeTargetData(void *td)'),
  StoreSizeOfType: f('uint64_t LLVMStoreSizeOfType(void *td, void *ty)'),
  ABISizeOfType: f('uint64_t LLVMABISizeOfType(void *td, void *ty)'),

  // module contents
  GetFirstFunction: f('void *LLVMGetFirstFunction(void *m)'),
  GetNextFunction: f('void *LLVMGetNextFunction(void *fn)'),
  GetFirstGlobal: f('void *LLVMGetFirstGlobal(void *m)'),
  GetNextGlobal: f('void *LLVMGetNextGlobal(void *g)'),
  GetNamedFunction: f('void *LLVMGetNamedFunction(void *m, const char *name)'),
  GetNamedGlobal: f('void *LLVMGetNamedGlobal(void *m, const char *name)'),
  AddFunction: f('void *LLVMAddFunction(void *m, const char *name, void *fnTy)'),
  AddGlobal: f('void *LLVMAddGlobal(void *m, void *ty, const char *name)'),
  DeleteGlobal: f('void LLVMDeleteGlobal(void *g)'),
  DeleteFunction: f('void LLVMDeleteFunction(void *fn)'),
  GetFirstBasicBlock: f('void *LLVMGetFirstBasicBlock(void *fn)'),
  GetNextBasicBlock: f('void *LLVMGetNextBasicBlock(void *bb)'),
  GetEntryBasicBlock: f('void *LLVMGetEntryBasicBlock(void *fn)'),
  GetFirstInstruction: f('void *LLVMGetFirstInstruction(void *bb)'),
  GetNextInstruction: f('void *LLVMGetNextInstruction(void *inst)'),
  GetBasicBlockTerminator: f('void *LLVMGetBasicBlockTerminator(void *bb)'),
  GetInstructionParent: f('void *LLVMGetInstructionParent(void *inst)'),
  GetBasicBlockParent: f('void *LLVMGetBasicBlockParent(void *bb)'),
  CountParams: f('unsigned int LLVMCountParams(void *fn)'),
  GetParam: f('void *LLVMGetParam(void *fn, unsigned int i)'),

  // values
  TypeOf: f('void *LLVMTypeOf(void *v)'),
  GetValueName2: f('const char *LLVMGetValueName2(void *v, _Out_ size_t *len)'),
  SetValueName2: f('void LLVMSetValueName2(void *v, const char *name, size_t len)'),
  PrintValueToString: f('LLVMMessage LLVMPrintValueToString(void *v)'),
  IsDeclaration: f('int LLVMIsDeclaration(void *g)'),
  GetLinkage: f('int LLVMGetLinkage(void *g)'),
  SetLinkage: f('void LLVMSetLinkage(void *g, int linkage)'),
  SetVisibility: f('void LLVMSetVisibility(void *g, int vis)'),
  IsThreadLocal: f('int LLVMIsThreadLocal(void *g)'),
  GetInitializer: f('void *LLVMGetInitializer(void *g)'),
  SetInitializer: f('void LLVMSetInitializer(void *g, void *c)'),
  SetGlobalConstant: f('void LLVMSetGlobalConstant(void *g, int isConst)'),
  GetNumOperands: f('int LLVMGetNumOperands(void *v)'),
  GetOperand: f('void *LLVMGetOperand(void *v, unsigned int i)'),
  SetOperand: f('void LLVMSetOperand(void *v, unsigned int i, void *op)'),
  GetFirstUse: f('void *LLVMGetFirstUse(void *v)'),
  GetNextUse: f('void *LLVMGetNextUse(void *u)'),
  GetUser: f('void *LLVMGetUser(void *u)'),
  ReplaceAllUsesWith: f('void LLVMReplaceAllUsesWith(void *old, void *nw)'),
  IsAInstruction: f('void *LLVMIsAInstruction(void *v)'),
  IsAConstant: f('void *LLVMIsAConstant(void *v)'),
  IsAConstantExpr: f('void *LLVMIsAConstantExpr(void *v)'),
  IsAConstantAggregateZero: f('void *LLVMIsAConstantAggregateZero(void *v)'),
  IsAConstantDataSequential: f('void *LLVMIsAConstantDataSequential(void *v)'),
  IsAGlobalVariable: f('void *LLVMIsAGlobalVariable(void *v)'),
  IsAGlobalAlias: f('void *LLVMIsAGlobalAlias(void *v)'),
  IsAFunction: f('void *LLVMIsAFunction(void *v)'),
  IsAArgument: f('void *LLVMIsAArgument(void *v)'),
  IsAAllocaInst: f('void *LLVMIsAAllocaInst(void *v)'),
  IsAInlineAsm: f('void *LLVMIsAInlineAsm(void *v)'),
  IsABasicBlock: f('void *LLVMValueIsBasicBlock(void *v)'),
  GetConstOpcode: f('int LLVMGetConstOpcode(void *c)'),
  GetInstructionOpcode: f('int LLVMGetInstructionOpcode(void *inst)'),
  InstructionEraseFromParent: f('void LLVMInstructionEraseFromParent(void *inst)'),
  GetICmpPredicate: f('int LLVMGetICmpPredicate(void *v)'),
  GetVolatile: f('int LLVMGetVolatile(void *inst)'),
  GetOrdering: f('int LLVMGetOrdering(void *inst)'),
  GetAlignment: f('unsigned int LLVMGetAlignment(void *v)'),
  SetAlignment: f('void LLVMSetAlignment(void *v, unsigned int a)'),
  GetCalledValue: f('void *LLVMGetCalledValue(void *call)'),
  GetCalledFunctionType: f('void *LLVMGetCalledFunctionType(void *call)'),
  GetNumArgOperands: f('unsigned int LLVMGetNumArgOperands(void *call)'),
  GetIntrinsicID: f('unsigned int LLVMGetIntrinsicID(void *fn)'),
  CountIncoming: f('unsigned int LLVMCountIncoming(void *phi)'),
  GetIncomingValue: f('void *LLVMGetIncomingValue(void *phi, unsigned int i)'),
  GetIncomingBlock: f('void *LLVMGetIncomingBlock(void *phi, unsigned int i)'),
  GetGEPSourceElementType: f('void *LLVMGetGEPSourceElementType(void *gep)'),
  IsInBounds: f('int LLVMIsInBounds(void *gep)'),
  GetAllocatedType: f('void *LLVMGetAllocatedType(void *alloca)'),
  GetEnumAttributeKindForName: f('unsigned int LLVMGetEnumAttributeKindForName(const char *name, size_t len)'),
  GetCallSiteEnumAttribute: f('void *LLVMGetCallSiteEnumAttribute(void *call, unsigned int idx, unsigned int kind)'),
  GetEnumAttributeAtIndex: f('void *LLVMGetEnumAttributeAtIndex(void *fn, unsigned int idx, unsigned int kind)'),
  IsTypeAttribute: f('int LLVMIsTypeAttribute(void *attr)'),
  GetTypeAttributeValue: f('void *LLVMGetTypeAttributeValue(void *attr)'),
  CreateEnumAttribute: f('void *LLVMCreateEnumAttribute(void *c, unsigned int kind, uint64_t val)'),
  AddAttributeAtIndex: f('void LLVMAddAttributeAtIndex(void *fn, unsigned int idx, void *attr)'),
  RemoveEnumAttributeAtIndex: f('void LLVMRemoveEnumAttributeAtIndex(void *fn, unsigned int idx, unsigned int kind)'),
  RemoveStringAttributeAtIndex: f('void LLVMRemoveStringAttributeAtIndex(void *fn, unsigned int idx, const char *k, unsigned int klen)'),

  // constants
  ConstInt: f('void *LLVMConstInt(void *ty, uint64_t v, int signExtend)'),
  ConstNull: f('void *LLVMConstNull(void *ty)'),
  ConstArray: f('void *LLVMConstArray(void *elTy, void **vals, unsigned int n)'),
  ConstStringInContext: f('void *LLVMConstStringInContext(void *c, const char *s, unsigned int len, int dontNullTerminate)'),
  ConstIntGetZExtValue: f('uint64_t LLVMConstIntGetZExtValue(void *c)'),
  IsAConstantPointerNull: f('void *LLVMIsAConstantPointerNull(void *v)'),
  IsAUndefValue: f('void *LLVMIsAUndefValue(void *v)'),
  IsAConstantInt: f('void *LLVMIsAConstantInt(void *v)'),

  // types
  GetTypeKind: f('int LLVMGetTypeKind(void *ty)'),
  GetElementType: f('void *LLVMGetElementType(void *ty)'),
  GetPointerAddressSpace: f('unsigned int LLVMGetPointerAddressSpace(void *ty)'),
  PointerType: f('void *LLVMPointerType(void *el, unsigned int as)'),
  Int8TypeInContext: f('void *LLVMInt8TypeInContext(void *c)'),
  Int32TypeInContext: f('void *LLVMInt32TypeInContext(void *c)'),
  Int64TypeInContext: f('void *LLVMInt64TypeInContext(void *c)'),
  VoidTypeInContext: f('void *LLVMVoidTypeInContext(void *c)'),
  ArrayType: f('void *LLVMArrayType(void *el, unsigned int n)'),
  FunctionType: f('void *LLVMFunctionType(void *ret, void **params, unsigned int n, int vararg)'),
  GetIntTypeWidth: f('unsigned int LLVMGetIntTypeWidth(void *ty)'),
  PrintTypeToString: f('LLVMMessage LLVMPrintTypeToString(void *ty)'),

  // builder
  CreateBuilderInContext: f('void *LLVMCreateBuilderInContext(void *c)'),
  DisposeBuilder: f('void LLVMDisposeBuilder(void *b)'),
  PositionBuilderBefore: f('void LLVMPositionBuilderBefore(void *b, void *inst)'),
  PositionBuilderAtEnd: f('void LLVMPositionBuilderAtEnd(void *b, void *bb)'),
  BuildCall2: f('void *LLVMBuildCall2(void *b, void *fnTy, void *fn, void **args, unsigned int n, const char *name)'),
  BuildAlloca: f('void *LLVMBuildAlloca(void *b, void *ty, const char *name)'),
  BuildStore: f('void *LLVMBuildStore(void *b, void *v, void *ptr)'),
  BuildLoad2: f('void *LLVMBuildLoad2(void *b, void *ty, void *ptr, const char *name)'),
  BuildBitCast: f('void *LLVMBuildBitCast(void *b, void *v, void *ty, const char *name)'),
  BuildPointerCast: f('void *LLVMBuildPointerCast(void *b, void *v, void *ty, const char *name)'),
  BuildIntToPtr: f('void *LLVMBuildIntToPtr(void *b, void *v, void *ty, const char *name)'),
  BuildPtrToInt: f('void *LLVMBuildPtrToInt(void *b, void *v, void *ty, const char *name)'),
  BuildZExtOrBitCast: f('void *LLVMBuildZExtOrBitCast(void *b, void *v, void *ty, const char *name)'),
  BuildGEP2: f('void *LLVMBuildGEP2(void *b, void *ty, void *ptr, void **idx, unsigned int n, const char *name)'),
  BuildInBoundsGEP2: f('void *LLVMBuildInBoundsGEP2(void *b, void *ty, void *ptr, void **idx, unsigned int n, const char *name)'),
  BuildBinOp: f('void *LLVMBuildBinOp(void *b, int op, void *l, void *r, const char *name)'),
  BuildCast: f('void *LLVMBuildCast(void *b, int op, void *v, void *ty, const char *name)'),
  BuildICmp: f('void *LLVMBuildICmp(void *b, int pred, void *l, void *r, const char *name)'),
  BuildSelect: f('void *LLVMBuildSelect(void *b, void *c, void *t, void *e, const char *name)'),

  // passes and code generation
  CreatePassBuilderOptions: f('void *LLVMCreatePassBuilderOptions()'),
  DisposePassBuilderOptions: f('void LLVMDisposePassBuilderOptions(void *o)'),
  PassBuilderOptionsSetLoopVectorization: f('void LLVMPassBuilderOptionsSetLoopVectorization(void *o, int v)'),
  PassBuilderOptionsSetSLPVectorization: f('void LLVMPassBuilderOptionsSetSLPVectorization(void *o, int v)'),
  RunPasses: f('void *LLVMRunPasses(void *m, const char *passes, void *tm, void *opts)'),
  GetErrorMessage: f('LLVMMessage LLVMGetErrorMessage(void *err)'),
  InitializeX86TargetInfo: f('void LLVMInitializeX86TargetInfo()'),
  InitializeX86Target: f('void LLVMInitializeX86Target()'),
  InitializeX86TargetMC: f('void LLVMInitializeX86TargetMC()'),
  InitializeX86AsmPrinter: f('void LLVMInitializeX86AsmPrinter()'),
  InitializeX86AsmParser: f('void LLVMInitializeX86AsmParser()'),
  GetTargetFromTriple: f('int LLVMGetTargetFromTriple(const char *triple, _Out_ void **t, _Out_ LLVMMessage *msg)'),
  CreateTargetMachine: f(
    'void *LLVMCreateTargetMachine(void *t, const char *triple, const char *cpu, const char *features, int level, int reloc, int codeModel)',
  ),
  DisposeTargetMachine: f('void LLVMDisposeTargetMachine(void *tm)'),
  TargetMachineEmitToFile: f('int LLVMTargetMachineEmitToFile(void *tm, void *m, const char *path, int kind, _Out_ LLVMMessage *msg)'),
};

/** llvm::Instruction opcodes as the C API numbers them (LLVMOpcode in Core.h, LLVM 14). */
export const Op = {
  Ret: 1, Br: 2, Switch: 3, IndirectBr: 4, Invoke: 5, Unreachable: 7, CallBr: 67,
  FNeg: 66, Add: 8, FAdd: 9, Sub: 10, FSub: 11, Mul: 12, FMul: 13, UDiv: 14, SDiv: 15, FDiv: 16, URem: 17, SRem: 18, FRem: 19,
  Shl: 20, LShr: 21, AShr: 22, And: 23, Or: 24, Xor: 25,
  Alloca: 26, Load: 27, Store: 28, GetElementPtr: 29,
  Trunc: 30, ZExt: 31, SExt: 32, FPToUI: 33, FPToSI: 34, UIToFP: 35, SIToFP: 36, FPTrunc: 37, FPExt: 38,
  PtrToInt: 39, IntToPtr: 40, BitCast: 41, AddrSpaceCast: 60,
  ICmp: 42, FCmp: 43, PHI: 44, Call: 45, Select: 46, UserOp1: 47, UserOp2: 48, VAArg: 49,
  ExtractElement: 50, InsertElement: 51, ShuffleVector: 52, ExtractValue: 53, InsertValue: 54, Freeze: 68,
  Fence: 55, AtomicCmpXchg: 56, AtomicRMW: 57, Resume: 58, LandingPad: 59, CleanupRet: 61, CatchRet: 62,
  CatchPad: 63, CleanupPad: 64, CatchSwitch: 65,
} as const;

/** LLVMTypeKind */
export const TypeKind = {
  Void: 0, Half: 1, Float: 2, Double: 3, X86_FP80: 4, FP128: 5, PPC_FP128: 6, Label: 7, Integer: 8,
  Function: 9, Struct: 10, Array: 11, Pointer: 12, Vector: 13, Metadata: 14, X86_MMX: 15, Token: 16,
  ScalableVector: 17, BFloat: 18, X86_AMX: 19,
} as const;

/** LLVMLinkage */
export const Linkage = { External: 0, Internal: 8, Private: 9 } as const;

let targetsReady = false;
/** Register the X86 backend once (the C header's LLVMInitializeAll* helpers are inline, so call the parts). */
export function initX86(): void {
  if (targetsReady) return;
  C.InitializeX86TargetInfo();
  C.InitializeX86Target();
  C.InitializeX86TargetMC();
  C.InitializeX86AsmPrinter();
  C.InitializeX86AsmParser();
  targetsReady = true;
}

export { koffi };
