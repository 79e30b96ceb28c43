import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { chooseAccel } from '../../common/accel.ts';

describe('chooseAccel', () => {
  it('uses KVM only with vmx/svm in the CPU flags, TCG otherwise (this machine: TCG)', () => {
    const hw = /^flags\s*:.*\b(vmx|svm)\b/m.test(readFileSync('/proc/cpuinfo', 'latin1'));
    const a = chooseAccel({});
    if (hw) expect(['kvm', 'tcg']).toContain(a.kind);
    else {
      expect(a.kind).toBe('tcg');
      expect(a.args).toEqual(['-accel', 'tcg,thread=multi', '-cpu', 'qemu64']);
      expect(a.why).toMatch(/no vmx\/svm/);
    }
  });
  it('honours CIEL_ACCEL', () => {
    expect(chooseAccel({ CIEL_ACCEL: 'tcg' }).kind).toBe('tcg');
    expect(chooseAccel({ CIEL_ACCEL: 'kvm' }).args).toContain('host');
  });
});
