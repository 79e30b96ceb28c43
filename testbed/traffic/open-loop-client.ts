// The open-loop HTTP client, run as its own process inside the client network namespace (`ip netns exec`
// only runs programs, so the generator cannot be a function of the host process). Requests leave on a
// fixed schedule, the k-th at start + k/rate, whether or not earlier ones were answered (an open loop:
// a slow server gets the same arrivals, as real users would send them; wrk is closed-loop, httperf's
// --rate is open-loop but reports latencies only as histograms). One connection per request
// (Connection: close), so IPVS schedules every request on its own.
//
// stdin, one JSON line each: {"rate": R} (requests per second from now on; 0 = pause), {"stop": true}
// (send nothing more, exit when every request in flight has ended). stdout, one JSON line per request:
// {"i", "sent" (epoch ms), "lat" (ms), "ok", "status", "err"?}; ok = HTTP 200 and the body the CGI must
// compute for the requested work (a wrong answer is a failure).
import { request } from 'node:http';
import { createInterface } from 'node:readline';

interface Args {
  host: string;
  port: number;
  /** iterations of the CGI's arithmetic per request */
  work: number;
  timeoutMs: number;
}

const args = JSON.parse(process.argv[2] ?? '{}') as Args;
const expectedBody = `work ${args.work} ${cgiWork(args.work)}\n`;
const now = () => performance.timeOrigin + performance.now();

/** What web's CGI computes for n iterations (the same arithmetic). */
function cgiWork(n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s = (s * 31 + i) % 1000003;
  return s;
}

let rate = 0;
let stopping = false;
let inFlight = 0;
let next = 0;
let seq = 0;
let timer: NodeJS.Timeout | undefined;

function emit(o: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(o)}\n`);
}

function send(): void {
  const i = seq++;
  const sent = now();
  inFlight++;
  let done = false;
  const finish = (ok: boolean, status: number, err?: string) => {
    if (done) return;
    done = true;
    inFlight--;
    emit({ i, sent: Math.round(sent * 10) / 10, lat: Math.round((now() - sent) * 10) / 10, ok, status, ...(err ? { err } : {}) });
    if (stopping && inFlight === 0) process.exit(0);
  };
  const req = request({ host: args.host, port: args.port, path: `/cgi-bin/work?${args.work}`, agent: false, headers: { Connection: 'close' }, timeout: args.timeoutMs }, (res) => {
    let body = '';
    res.setEncoding('latin1');
    res.on('data', (d: string) => {
      if (body.length < 4096) body += d;
    });
    res.on('end', () => finish(res.statusCode === 200 && body === expectedBody, res.statusCode ?? 0, body === expectedBody ? undefined : `body ${JSON.stringify(body.slice(0, 80))}`));
    res.on('error', (e) => finish(false, res.statusCode ?? 0, e.message));
  });
  req.on('timeout', () => {
    req.destroy(new Error(`no answer within ${args.timeoutMs} ms`));
  });
  req.on('error', (e) => finish(false, 0, e.message));
  req.end();
}

/** Send every request whose time has come (all of them if the event loop was late), then sleep. */
function pump(): void {
  timer = undefined;
  if (stopping || rate <= 0) return;
  const t = now();
  while (next <= t) {
    send();
    next += 1000 / rate;
  }
  timer = setTimeout(pump, Math.max(0, next - now()));
}

createInterface({ input: process.stdin }).on('line', (line) => {
  const m = JSON.parse(line) as { rate?: number; stop?: boolean };
  if (m.stop) {
    stopping = true;
    if (timer) clearTimeout(timer);
    if (inFlight === 0) process.exit(0);
    return;
  }
  if (typeof m.rate === 'number') {
    const was = rate;
    rate = m.rate;
    // a new rate starts its schedule now; a running schedule keeps its phase
    if (was <= 0) next = now();
    if (timer) clearTimeout(timer);
    pump();
  }
});
emit({ ready: true, expected: expectedBody.trim() });
