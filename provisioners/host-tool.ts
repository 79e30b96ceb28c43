// Running a host tool (virsh, qemu-img, cp, mkfifo) for the provisioners: its stdout, or a ToolError
// carrying the tool, its arguments and what it wrote to stderr.

import { execa } from 'execa';
import { ToolError } from '../common/errors.ts';

export async function tool(cmd: string, args: string[], input?: string): Promise<string> {
  try {
    const r = await execa(cmd, args, input === undefined ? {} : { input });
    return r.stdout;
  } catch (err) {
    const e = err as { stderr?: string; shortMessage?: string; message: string };
    throw new ToolError(cmd, `${args.join(' ')}: ${(e.stderr || e.shortMessage || e.message).toString().trim()}`);
  }
}
