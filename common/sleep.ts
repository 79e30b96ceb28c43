// A sleep that an AbortSignal ends early (resolving, not rejecting: a stop request is not an error).
// The sampling daemon and `ciel autoscale` wait between intervals with it, so a signal stops them at once.

export function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}
