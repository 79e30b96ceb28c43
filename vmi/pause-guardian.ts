// Whoever pauses a VM must be sure it runs again, even if this process dies inside the pause (SIGKILL,
// the OOM killer): a tiny guardian process owns every pause. Before QMP `stop` the session writes
// `P <how to resume>` down a pipe to it (and waits until the line is in the kernel's pipe buffer), after
// `cont` it writes `R <how to resume>`. When the pipe ends -- this process exited or was killed -- the
// guardian sends `cont` to each VM still marked paused, then exits: over its QMP socket (QMP serves one
// client at a time, and a dead process's connection is closed by the kernel, so the guardian gets in), or
// for a libvirt domain through libvirt's monitor passthrough (`virsh qemu-monitor-command`).
// It is plain JavaScript run by `node -e`: no file to find, whether Ciel runs from dist/ or from source.
import { spawn, type ChildProcess } from 'node:child_process';

const GUARDIAN = String.raw`
const net = require('node:net');
const { execFile } = require('node:child_process');
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
    const key = line.slice(2);
    if (line[0] === 'P') paused.add(key); else paused.delete(key);
  }
});
process.stdin.on('end', async () => {
  for (const key of paused) {
    const via = JSON.parse(key);
    const ok = via.libvirt ? await virshCont(via.libvirt) : await cont(via.qmp);
    const what = via.libvirt ? 'libvirt domain ' + via.libvirt.domain : via.qmp;
    process.stderr.write('ciel pause guardian: ' + (ok ? 'resumed ' : 'could NOT resume ') + what + ' (its ciel process ended inside a pause)\n');
  }
  process.exit(0);
});
function virshCont(d) {
  return new Promise((done) =>
    execFile('virsh', ['-c', d.uri, 'qemu-monitor-command', d.domain, '{"execute":"cont"}'], { timeout: 20000 }, (err, out) =>
      done(!err && String(out).includes('"return"'))));
}
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

/** How the guardian reaches a VM to resume it: its QMP socket, or a libvirt domain (monitor passthrough). */
export type ResumeVia = { qmp: string } | { libvirt: { uri: string; domain: string } };

// one key per VM: the same object always gives the same line
const key = (v: ResumeVia): string => JSON.stringify('qmp' in v ? { qmp: v.qmp } : { libvirt: { uri: v.libvirt.uri, domain: v.libvirt.domain } });

/** Call before QMP `stop`: resolves once the guardian is sure to learn of the pause even if we die now. */
export const guardPause = (via: ResumeVia): Promise<void> => tell(`P ${key(via)}\n`);

/** Call after QMP `cont` answered. */
export const releasePause = (via: ResumeVia): Promise<void> => tell(`R ${key(via)}\n`);
