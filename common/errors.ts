// Typed errors. Each carries what was wrong: the guest address, the file and field, the VM, the option,
// or the tool that failed.

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

/** One field of an input file is wrong: `FILE: field.path: detail`. */
export class BadFieldError extends BadInputError {
  constructor(
    file: string,
    readonly field: string,
    detail: string,
  ) {
    super(file, `${field}: ${detail}`);
  }
}

/** A value handed over in code (not read from a file) is out of range: `what: detail`. */
export class InvalidValueError extends CielError {
  constructor(
    readonly what: string,
    detail: string,
  ) {
    super(`${what}: ${detail}`);
  }
}

/** A command-line option is wrong or does not go with another; the message names the option. */
export class UsageError extends CielError {
  constructor(
    readonly option: string,
    message: string,
  ) {
    super(message);
  }
}

/** Something went wrong with one VM (attach, sample, re-attach, VM-level stats): carries the VM's name and the cause. */
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

/** The load balancer could not be told about a replica (hook failed, no address): names the replica VM and address. */
export class BalancerError extends CielError {
  constructor(
    readonly vm: string,
    readonly address: string | undefined,
    message: string,
  ) {
    super(message);
  }
}

/** Every configured replica address is held: no replica can be given one. */
export class AddressPoolExhaustedError extends CielError {
  constructor(
    readonly addresses: readonly string[],
    message: string,
  ) {
    super(message);
  }
}
