// The controller's events as an experiment records them, and the two questions every experiment asks of
// them: which event came first after a moment, and "wait until this holds" with the recent events in the
// error when it never does (shared by scenario.ts and traffic/experiment.ts).
import type { TimedEvent } from '../controller/scale-out-timeline.ts';
import type { ControllerEvent } from '../controller/types.ts';

export class EventLog {
  readonly events: TimedEvent[] = [];

  push(t: TimedEvent): void {
    this.events.push(t);
  }

  /** The first matching event at or after `from` (host ms). */
  find(pred: (e: ControllerEvent) => boolean, from = 0): TimedEvent | undefined {
    return this.events.find((x) => x.at >= from && pred(x.e));
  }

  /** Poll `fn` until it gives a value; after `ms`, fail naming `what` and the last events (VM checks left out). */
  async waitFor<T>(fn: () => T | undefined | false, ms: number, what: string): Promise<T> {
    const end = Date.now() + ms;
    for (;;) {
      const v = fn();
      if (v) return v;
      if (Date.now() > end) {
        const tail = this.events.filter((x) => x.e.type !== 'vm_check').slice(-6).map((x) => JSON.stringify(x.e)).join('\n');
        throw new Error(`timed out after ${ms} ms waiting for ${what}; last events:\n${tail}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
