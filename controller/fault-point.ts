// Test instrumentation for the controller's crash tests: `CIEL_FAULT_AT=<step>` makes the controller
// SIGKILL itself when it reaches that step (see the steps in durable-replicas.ts), as a crash or an OOM
// kill would. Inert unless the variable is set.

/** The named steps at which CIEL_FAULT_AT can kill the controller. */
export const FAULT_STEPS = ['after_clone', 'after_boot', 'before_register', 'after_register', 'before_drain', 'during_drain'] as const;
export type FaultStep = (typeof FAULT_STEPS)[number];

export function faultPoint(step: FaultStep): void {
  if (process.env.CIEL_FAULT_AT === step) process.kill(process.pid, 'SIGKILL');
}
