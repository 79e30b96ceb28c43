// controller/tracking-provisioner.ts: a replica's address from its kernel command line.
import { describe, expect, it } from 'vitest';
import { addressOf } from '../../controller/tracking-provisioner.ts';

describe('addressOf()', () => {
  it('reads ciel.ip from the kernel command line', () => {
    expect(addressOf({ cmdline: 'console=ttyS0 ciel.container=web ciel.ip=10.77.0.20/24' } as never)).toBe('10.77.0.20');
    expect(addressOf({ cmdline: 'console=ttyS0 ciel.container=web' } as never)).toBeUndefined();
  });
});
