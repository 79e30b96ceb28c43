// The two files Docker keeps per container, parsed as the guest data they are:
//
//   /var/lib/docker/containers/<id>/config.v2.json  ->  Name, Config.Image, Config.Labels
//   /var/lib/docker/containers/<id>/hostconfig.json ->  Memory, MemorySwap, MemoryReservation,
//                                                       CpuShares, CpuPeriod, CpuQuota, NanoCpus
//
// Anything that does not have the shape Docker writes is dropped field by field: a garbage label or
// limit costs that label or limit, never the container's name, and never an exception.

import { isContainerName, isImageRef } from '../common/guest-text.ts';
import type { ContainerLimits } from '../vmi/session.ts';

export interface DockerContainerInfo {
  /** 64-hex container id */
  id: string;
  /** Docker's name without the leading '/' */
  name: string;
  /** Config.Image, as given to `docker run` (e.g. nginx:1.25); '' when absent */
  image: string;
  /** Config.Labels (only the string-to-string entries within the bounds below); absent when none */
  labels?: Record<string, string>;
  /** from hostconfig.json; absent when that file is missing or holds none of the limit fields */
  limits?: ContainerLimits;
}

/** Bounds on what a guest can make us carry per container (Docker itself sets none). */
export const MAX_LABELS = 64;
export const MAX_LABEL_KEY_CHARS = 256;
export const MAX_LABEL_VALUE_CHARS = 4096;

/** Docker's defaults when a limit is not set: cpu.shares 1024, CFS period 100 ms. */
const DEFAULT_CPU_SHARES = 1024;
const DEFAULT_CPU_PERIOD_US = 100_000;

const isRecord = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

function parseObject(text: string): Record<string, unknown> | null {
  try {
    const j: unknown = JSON.parse(text);
    return isRecord(j) ? j : null;
  } catch {
    return null;
  }
}

/** Docker's config.v2.json -> name/image/labels; null when it is not one (or its name is not one Docker allows). */
export function parseDockerConfig(id: string, text: string): DockerContainerInfo | null {
  const o = parseObject(text);
  if (!o || typeof o.Name !== 'string') return null;
  if (typeof o.ID === 'string' && o.ID !== id) return null;
  const name = o.Name.replace(/^\//, '');
  // a name Docker could not have written is the guest's doing: no name (the container shows as its id)
  if (!isContainerName(name)) return null;
  const config = isRecord(o.Config) ? o.Config : {};
  const raw = typeof config.Image === 'string' ? config.Image : '';
  const info: DockerContainerInfo = { id, name, image: isImageRef(raw) ? raw : '' };
  const labels = parseLabels(config.Labels);
  if (labels) info.labels = labels;
  return info;
}

/** Config.Labels: string keys (1..256 chars) to string values (<= 4096 chars), at most 64, the rest dropped. */
function parseLabels(x: unknown): Record<string, string> | undefined {
  if (!isRecord(x)) return undefined;
  const out: Record<string, string> = {};
  let n = 0;
  for (const key of Object.keys(x).sort()) {
    const v = x[key];
    if (typeof v !== 'string' || key.length === 0 || key.length > MAX_LABEL_KEY_CHARS || v.length > MAX_LABEL_VALUE_CHARS) continue;
    out[key] = v;
    if (++n === MAX_LABELS) break;
  }
  return n ? out : undefined;
}

/** An integer field of hostconfig.json: undefined when missing/null, NaN when it is not a sane integer in [min, max]. */
function intField(o: Record<string, unknown>, key: string, min: number, max: number): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= min && v <= max ? v : NaN;
}

const LIMIT_FIELDS = ['Memory', 'MemorySwap', 'MemoryReservation', 'CpuShares', 'CpuPeriod', 'CpuQuota', 'NanoCpus'];
const MAX_BYTES = 2 ** 53 - 1;

/**
 * hostconfig.json -> the limits Docker applied to the container's cgroup, in cgroup units and with
 * Docker's own defaults and conversions (as `docker run`'s documentation states them):
 * - Memory 0 = unlimited; MemorySwap is memory+swap: -1 = unlimited, 0 with a Memory = twice Memory;
 * - CpuShares 0 = 1024; CpuPeriod 0 = 100000 us; CpuQuota <= 0 = none;
 * - NanoCpus (`--cpus`) = period 100000 us and quota NanoCpus * 100000 / 1e9 us.
 * A field of the wrong type or out of range makes that limit unknown (absent), not a default.
 * undefined when the text is not a JSON object or has none of the fields.
 */
export function parseHostConfig(text: string): ContainerLimits | undefined {
  const o = parseObject(text);
  if (!o || !LIMIT_FIELDS.some((k) => o[k] !== undefined && o[k] !== null)) return undefined;
  const limits: ContainerLimits = {};
  const set = (k: keyof ContainerLimits, v: number | undefined) => {
    if (v !== undefined && !Number.isNaN(v)) limits[k] = v;
  };
  const memory = intField(o, 'Memory', 0, MAX_BYTES);
  const swap = intField(o, 'MemorySwap', -1, MAX_BYTES);
  set('memoryBytes', memory ?? 0);
  if (memory !== undefined && Number.isNaN(memory)) set('memorySwapBytes', swap !== undefined && swap > 0 ? swap : NaN);
  else if (swap === -1) set('memorySwapBytes', 0);
  else if (swap === undefined || swap === 0) set('memorySwapBytes', memory ? memory * 2 : 0);
  else set('memorySwapBytes', swap);
  set('memoryReservationBytes', intField(o, 'MemoryReservation', 0, MAX_BYTES) ?? 0);

  const shares = intField(o, 'CpuShares', 0, 262_144);
  set('cpuShares', shares === undefined || shares === 0 ? DEFAULT_CPU_SHARES : shares);
  const nano = intField(o, 'NanoCpus', 0, 1e12);
  if (nano !== undefined && (Number.isNaN(nano) || nano > 0)) {
    set('cpuPeriodUs', Number.isNaN(nano) ? NaN : DEFAULT_CPU_PERIOD_US);
    set('cpuQuotaUs', Number.isNaN(nano) ? NaN : Math.floor((nano * DEFAULT_CPU_PERIOD_US) / 1e9));
  } else {
    const period = intField(o, 'CpuPeriod', 0, 1_000_000);
    set('cpuPeriodUs', period === undefined || period === 0 ? DEFAULT_CPU_PERIOD_US : period);
    const quota = intField(o, 'CpuQuota', -1, 2 ** 40);
    set('cpuQuotaUs', quota === undefined || quota <= 0 ? 0 : quota);
  }
  return limits;
}
