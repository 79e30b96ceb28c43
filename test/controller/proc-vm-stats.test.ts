// controller/proc-vm-stats.ts: VM-level stats from /proc (of this very process), and the fallback.
import { describe, expect, it } from 'vitest';
import { ProcVmStats, readProcVmStats } from '../../controller/proc-vm-stats.ts';

describe('VM-level stats from /proc', () => {
  it('reads CPU time and RSS of a process, and falls back for unknown VMs', async () => {
    const a = readProcVmStats({ name: 'me', pid: process.pid, vcpus: 2, memMiB: 512 });
    let x = 0;
    for (let i = 0; i < 3e7; i++) x += i;
    const b = readProcVmStats({ name: 'me', pid: process.pid, vcpus: 2, memMiB: 512 });
    expect(x).toBeGreaterThan(0);
    expect(b.cpu_time_ns).toBeGreaterThan(a.cpu_time_ns);
    expect(b.memory_used_bytes).toBeGreaterThan(1 << 20);
    expect(b.memory_total_bytes).toBe(512 * 2 ** 20);
    const src = new ProcVmStats({ vmStats: async (v) => ({ ...b, vm: String(v) }) }).add({ name: 'me', pid: process.pid, vcpus: 2, memMiB: 512 });
    expect((await src.vmStats('me')).vm).toBe('me');
    expect((await src.vmStats('other')).vm).toBe('other');
    await expect(new ProcVmStats().vmStats('x')).rejects.toThrow(/no VM-level stats source/);
  });
});
