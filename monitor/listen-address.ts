// Where `ciel monitor --prometheus` listens: "[HOST:]PORT", loopback unless a host is given. Apart from
// the exporter so that registering the command (its --help) loads no HTTP or metrics code.
import { UsageError } from '../common/errors.ts';

/** loopback only by default: the numbers describe other people's VMs */
export const DEFAULT_HOST = '127.0.0.1';
/** the conventional port of Prometheus exporters of this kind */
export const DEFAULT_PORT = 9464;

/** "[HOST:]PORT" -> host/port; loopback unless a host is given. IPv6 as [::1]:9464. */
export function parseListen(v: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]:|([^:[\]]+):)?(\d{1,5})$/.exec(v.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new UsageError('--prometheus', `--prometheus wants [HOST:]PORT, e.g. 9464 or 127.0.0.1:9464 (got ${JSON.stringify(v)})`);
  return { host: m[1] ?? m[2] ?? DEFAULT_HOST, port };
}
