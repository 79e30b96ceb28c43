// One compact line per interesting controller event, for `ciel autoscale` without --json (wording as in
// bin/demo.ts). Only what an operator acts on: a VM turning hot or cool, the container chosen (or why
// none), decisions, replicas started/drained, failures. Repeats are dropped: a VM that stays hot, a
// choice the engine makes again every sample, the same error every interval.

import type { ControllerEvent } from './types.ts';

const pct = (x: number) => `${(x * 100).toFixed(0)}%`;

/** Local wall time of an ISO stamp, HH:MM:SS.mmm. */
export function clockTime(isoTime: string): string {
  const d = new Date(isoTime);
  if (Number.isNaN(d.getTime())) return isoTime;
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

export class EventLines {
  /** "vm/resource" currently hot */
  private readonly hot = new Set<string>();
  /** per VM: the last choice printed ("container/rule", or "none") */
  private readonly chosen = new Map<string, string>();
  /** per "where/vm": the last error printed, until that VM is checked fine again */
  private readonly errors = new Map<string, string>();

  /**
   * @param dryRun replicas are not really started: action lines say what would have been done
   */
  constructor(private readonly dryRun = false) {}

  /** The line for `e` (no newline), or undefined when it is not worth one. */
  line(e: ControllerEvent): string | undefined {
    const text = this.text(e);
    return text === undefined ? undefined : `${clockTime(e.time)}  ${text}`;
  }

  private text(e: ControllerEvent): string | undefined {
    switch (e.type) {
      case 'vm_check':
        // a VM read fine again: its next error is news
        this.errors.delete(`vm_stats/${e.vm}`);
        return undefined;
      case 'containers_sampled':
        this.errors.delete(`container_sample/${e.vm}`);
        return undefined;
      case 'vm_hot': {
        const k = `${e.vm}/${e.resource}`;
        if (this.hot.has(k)) return undefined;
        this.hot.add(k);
        return `▲ VM ${e.vm} hot: ${e.resource} ${pct(e.value)} > ${pct(e.threshold)} (VM level)`;
      }
      case 'vm_cool':
        for (const k of [...this.hot]) if (k.startsWith(`${e.vm}/`)) this.hot.delete(k);
        this.chosen.delete(e.vm);
        return `▽ VM ${e.vm} cool again`;
      case 'container_chosen': {
        // once per (container, rule) streak: the engine chooses again every sample while the VM is hot
        const k = `${e.container}/${e.rule}`;
        if (this.chosen.get(e.vm) === k) return undefined;
        this.chosen.set(e.vm, k);
        const why = e.rule === 'over_threshold' ? `over its threshold, ${e.resource} at ${e.score.toFixed(2)}× it` : `largest projected ${e.resource} load, ${pct(e.score)} of the VM`;
        return `● chosen in ${e.vm}: ${e.container} (${why})`;
      }
      case 'no_choice': {
        if (this.chosen.get(e.vm) === 'none') return undefined;
        this.chosen.set(e.vm, 'none');
        const cands = e.candidates.map((c) => `${c.container} ${pct(c.share)}`).join(', ') || 'no container';
        return `○ VM ${e.vm} hot, but no container carries ${pct(e.min_share)} of its ${e.resource} (${cands}): nothing to scale out`;
      }
      case 'decision':
        return `■ DECISION ${e.action === 'scale_out' ? 'scale out' : 'scale in'} ${e.container} ${e.from} → ${e.to} (${e.reason})`;
      case 'scaled_out':
        if (this.dryRun) return `✔ dry run: would start replica ${e.replica} for ${e.container}`;
        return `✔ replica ${e.replica} serves ${e.container} (${e.pooled ? 'from the pool' : 'new clone'}; clone ${Math.round(e.clone_ms ?? 0)} ms, boot ${Math.round(e.boot_ms ?? 0)} ms)`;
      case 'scaled_in':
        if (this.dryRun) return `✔ dry run: would drain replica ${e.replica} of ${e.container} and return it to the pool`;
        return `✔ replica ${e.replica} of ${e.container} drained and returned to the pool`;
      case 'action_failed':
        return `✖ ${e.container}: action failed${e.replica ? ` (replica ${e.replica})` : ''}: ${e.error ?? 'unknown error'}`;
      case 'error': {
        const k = `${e.where}/${e.vm ?? ''}`;
        if (this.errors.get(k) === e.error) return undefined;
        this.errors.set(k, e.error);
        const what = e.where === 'vm_stats' ? 'VM-level stats' : e.where === 'container_sample' ? 'container sample' : 'controller step';
        return `✖ ${e.vm ? `${e.vm}: ` : ''}${what} failed: ${e.error}`;
      }
      default:
        return undefined;
    }
  }
}
