import { describe, expect, it } from 'vitest';
import { parseInterval } from '../../common/interval.ts';

describe('parseInterval', () => {
  it("reads ms, s, m and bare seconds; refuses garbage and less than the configs' 10 ms", () => {
    expect(parseInterval('250ms')).toBe(250);
    expect(parseInterval('1s')).toBe(1000);
    expect(parseInterval(' 0.1s ')).toBe(100);
    expect(parseInterval('2m')).toBe(120_000);
    expect(parseInterval('3')).toBe(3000);
    expect(() => parseInterval('1h')).toThrow(/bad interval '1h'/);
    expect(() => parseInterval('-1s')).toThrow(/bad interval/);
    expect(parseInterval('10ms')).toBe(10);
    expect(() => parseInterval('0.5ms')).toThrow(/shorter than 10 ms/);
    expect(() => parseInterval('5ms')).toThrow(/'5ms' is shorter than 10 ms \(the configs' minimum, 0.01 s\)/);
  });
});
