// Tearing down an experiment: every step runs even when an earlier one failed (a dead VM must not leave
// the namespace or the files behind); a failure is logged, never thrown.
export function cleanupSteps(log: (line: string) => void): (what: string, f: () => Promise<unknown> | unknown) => Promise<void> {
  return async (what, f) => {
    try {
      await f();
    } catch (e) {
      log(`cleanup: ${what}: ${(e as Error).message}`);
    }
  };
}
