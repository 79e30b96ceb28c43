import { describe, expect, it } from 'vitest';
import { slotAddress, type SlotInfo } from '../../common/build-artifact.ts';

const slide = 0x2b600000n;
const perCpu: SlotInfo = { index: 0, name: 'kernel_cpustat', kind: 'variable', address: '0xffffffff83f51d80', perCpu: true };
const plain: SlotInfo = { index: 1, name: 'cgrp_dfl_root', kind: 'variable', address: '0xffffffff8337b240', perCpu: false };

describe('slot addresses for a slid kernel', () => {
  it('leaves zero-based per-CPU offsets alone (x86-64 up to 6.x; builds without perCpuStart too)', () => {
    const zeroBased = { ...perCpu, address: '0x1ed40' };
    expect(slotAddress(zeroBased, {}, slide)).toBe(0x1ed40n);
    expect(slotAddress(zeroBased, { perCpuStart: '0x0' }, slide)).toBe(0x1ed40n);
    expect(slotAddress(plain, {}, slide)).toBe(0xffffffff8337b240n + slide);
  });

  it('slides per-CPU symbols when the per-CPU section is in the image (7.x: __per_cpu_start ffffffff83f35000)', () => {
    expect(slotAddress(perCpu, { perCpuStart: '0xffffffff83f35000' }, slide)).toBe(0xffffffff83f51d80n + slide);
    expect(slotAddress(plain, { perCpuStart: '0xffffffff83f35000' }, slide)).toBe(0xffffffff8337b240n + slide);
  });
});
