// Typed errors. Each carries what was wrong: the guest address, the file, or the tool that failed.

export class CielError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A guest virtual address could not be read (not mapped, outside RAM, budget exhausted, ...). */
export class GuestFaultError extends CielError {
  constructor(
    readonly gva: bigint,
    readonly reason: string,
    readonly code: number,
  ) {
    super(`guest fault at 0x${gva.toString(16)}: ${reason}`);
  }
}

/** An input file (IR, ELF core, memory file, System.map, ...) is missing or malformed. */
export class BadInputError extends CielError {
  constructor(
    readonly file: string,
    detail: string,
  ) {
    super(`${file}: ${detail}`);
  }
}

/** The instrumentation verifier refused a construct it cannot make safe. */
export class RefusedError extends CielError {
  constructor(readonly refusals: { fn: string; inst: string; reason: string }[]) {
    super(
      `refused ${refusals.length} construct(s):\n` +
        refusals.map((r) => `  in ${r.fn}: ${r.reason}\n      ${r.inst}`).join('\n'),
    );
  }
}

/** An external tool (clang-14, apt-get, qemu, ...) is missing or failed. */
export class ToolError extends CielError {
  constructor(
    readonly tool: string,
    detail: string,
  ) {
    super(`${tool}: ${detail}`);
  }
}

/** Something went wrong with one VM (attach, sample, re-attach): carries the VM's name and the cause. */
export class VmError extends CielError {
  constructor(
    readonly vm: string,
    /** the message without the VM's name (for output that already prefixes it) */
    readonly detail: string,
    options?: { cause?: unknown },
  ) {
    super(`${vm}: ${detail}`);
    if (options && 'cause' in options) this.cause = options.cause;
  }
}
