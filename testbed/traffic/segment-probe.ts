// Is web answering at an address on the segment? One GET of / with curl inside the namespace (the host
// process is outside it; its own sockets cannot reach the segment).
import type { L2Segment } from '../lb/netns.ts';

export async function webAnswers(seg: L2Segment, address: string): Promise<boolean> {
  const r = await seg.exec('curl', ['-s', '--max-time', '3', `http://${address}/`], { reject: false, timeoutMs: 10_000 }).catch(() => ({ stdout: '', exitCode: 1 }));
  // execa strips the final newline
  return r.exitCode === 0 && r.stdout.trim() === 'ciel web';
}
