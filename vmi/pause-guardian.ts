// Whoever pauses a VM must be sure it runs again, even if this process dies inside the pause (SIGKILL,
// the OOM killer): a tiny guardian process owns every pause. Before QMP `stop` the session writes
// `P <qmp socket>` down a pipe to it (and waits until the line is in the kernel's pipe buffer), after
// `cont` it writes `R <qmp socket>`. When the pipe ends -- this process exited or was killed -- the
// guardian connects to each socket still marked paused and sends `cont`, then exits. QMP serves one
// client at a time, and a dead process's connection is closed by the kernel, so the guardian gets in.
// It is plain JavaScript run by `node -e`: no file to find, whether Ciel runs from dist/ or from source.
import { spawn, type ChildProcess } from 'node:child_process';

const GUARDIAN = String.raw`
const net = require('node:net');
const paused = new Set();
let buf = '';
// a Ctrl-C meant for ciel must not stop the one process that resumes its VMs
for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(s, () => {});
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  buf += d;
  for (let i; (i = buf.indexOf('\n')) >= 0; ) {
    const line = buf.slice(0, i);
    buf = buf.slice(i + 1);
    const sock = JSON.parse(line.slice(2));
    if (line[0] === 'P') paused.add(sock); else paused.delete(sock);
  }
});
process.stdin.on('end', async () => {
  for (const sock of paused) {
    const ok = await cont(sock);
    process.stderr.write('ciel pause guardian: ' + (ok ? 'resumed ' : 'could NOT resume ') + sock + ' (its ciel process ended inside a pause)\n');
  }
  process.exit(0);
});
function cont(sock) {
  const deadline = Date.now() + 20000;
  return new Promise((done) => {
    const attempt = () => {
      const c = net.connect(sock);
      let b = '', step = 0, settled = false;
      const again = () => { if (settled) return; settled = true; c.destroy(); Date.now() < deadline ? setTimeout(attempt, 100) : done(false); };
      const timer = setTimeout(again, 2000); // another client holds the socket: QEMU greets us when it leaves
      c.on('error', () => { clearTimeout(timer); again(); });
      c.on('data', (d) => {
        b += d;
        for (let i; (i = b.indexOf('\n')) >= 0; ) {
          let m; try { m = JSON.parse(b.slice(0, i)); } catch { m = {}; }
          b = b.slice(i + 1);
          if (m.QMP && step === 0) { step = 1; c.write('{"execute":"qmp_capabilities"}\n'); }
          else if (m.return !== undefined && step === 1) { step = 2; c.write('{"execute":"cont"}\n'); }
          else if ((m.return !== undefined || m.error) && step === 2) { clearTimeout(timer); settled = true; c.end(); done(m.return !== undefined); }
        }
      });
    };
    attempt();
  });
}
`;

let guardian: ChildProcess | undefined;

function get(): ChildProcess {
  if (guardian && guardian.exitCode === null && guardian.stdin?.writable) return guardian;
  // own process group (a terminal's Ctrl-C does not reach it), stderr shared so its one line is seen
  const child = spawn(process.execPath, ['-e', GUARDIAN], { stdio: ['pipe', 'ignore', 'inherit'], detached: true });
  child.unref();
  (child.stdin as unknown as { unref?: () => void }).unref?.(); // never keeps this process alive
  child.stdin!.on('error', () => {}); // a guardian that died is replaced at the next pause
  guardian = child;
  return child;
}

function tell(line: string): Promise<void> {
  const g = get();
  return new Promise((resolve, reject) => g.stdin!.write(line, (e) => (e ? reject(e) : resolve())));
}

/** Call before QMP `stop`: resolves once the guardian is sure to learn of the pause even if we die now. */
export const guardPause = (qmpSocket: string): Promise<void> => tell(`P ${JSON.stringify(qmpSocket)}\n`);

/** Call after QMP `cont` answered. */
export const releasePause = (qmpSocket: string): Promise<void> => tell(`R ${JSON.stringify(qmpSocket)}\n`);
