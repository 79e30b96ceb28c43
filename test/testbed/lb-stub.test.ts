// testbed/lb-stub.ts: the stub balancer's bookkeeping.
import { describe, expect, it } from 'vitest';
import { RoundRobinStubBalancer } from '../../testbed/lb-stub.ts';

describe('RoundRobinStubBalancer', () => {
  it('keeps backends by address and drains them', async () => {
    const lb = new RoundRobinStubBalancer({ ns: 'none', addressOf: (b) => (b.vm === 'r1' ? '10.77.0.20' : undefined) });
    await lb.addBackend('web', { vm: 'r1', container: 'web' });
    await lb.addBackend('web', { vm: 'r1', container: 'web' });
    expect(lb.list('web')).toEqual([{ service: 'web', address: '10.77.0.20', vm: 'r1' }]);
    await expect(lb.addBackend('web', { vm: 'r2', container: 'web' })).rejects.toThrow(/no address/);
    await lb.removeBackend('web', { vm: 'r1', container: 'web' });
    expect(lb.list()).toEqual([]);
    expect(await lb.drive('web', 3)).toEqual({});
  });
});
