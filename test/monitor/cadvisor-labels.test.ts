import { describe, expect, it } from 'vitest';
import { cleanValue, containerLabelName, dockerLabelSet, escapeValue, MAX_LABEL_TEXT, MAX_VALUE_CHARS, seriesLine } from '../../monitor/cadvisor-labels.ts';

describe('container_label_* names', () => {
  it("sanitize Docker label keys as cAdvisor does: every character outside [a-zA-Z0-9_] becomes '_'", () => {
    expect(containerLabelName('com.docker.compose.service')).toBe('container_label_com_docker_compose_service');
    expect(containerLabelName('maintainer')).toBe('container_label_maintainer');
    expect(containerLabelName('9lives')).toBe('container_label_9lives');
    expect(containerLabelName('a b=c"d\n\u00e9')).toBe('container_label_a_b_c_d__');
    expect(containerLabelName('x\ud83d\ude00')).toBe('container_label_x_');
  });

  it('keep the first key (in key order) when two keys sanitize to the same name', () => {
    expect(dockerLabelSet({ 'a.b': 'dot', 'a-b': 'dash', a_b: 'underscore', z: 'last' })).toEqual({ container_label_a_b: 'dash', container_label_z: 'last' });
    expect(Object.keys(dockerLabelSet({ z: '1', a: '2', m: '3' }))).toEqual(['container_label_a', 'container_label_m', 'container_label_z']);
    expect(dockerLabelSet(undefined)).toEqual({});
  });

  it('carry at most MAX_LABEL_TEXT characters of names and values per container; a label that does not fit is left out', () => {
    // 64 labels of 1024-character values: 3 fit (3 * (17 + 1024) = 3123), a 4th would pass 4096; a small one after still fits
    const big = Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`b${String(i).padStart(2, '0')}`, 'v'.repeat(5000)]));
    const set = dockerLabelSet({ ...big, zz: 'small' });
    expect(Object.keys(set)).toEqual(['container_label_b00', 'container_label_b01', 'container_label_b02', 'container_label_zz']);
    expect(set.container_label_b00).toBe('v'.repeat(MAX_VALUE_CHARS - 1) + '…');
    const total = Object.entries(set).reduce((n, [k, v]) => n + k.length + v.length, 0);
    expect(total).toBeLessThanOrEqual(MAX_LABEL_TEXT);
    expect(dockerLabelSet({ k: 'a\u001bb' })).toEqual({ container_label_k: 'a?b' });
  });
});

describe('label values', () => {
  it('escape backslash, double quote and newline as the exposition format requires', () => {
    expect(escapeValue('a"b\\c\nd')).toBe('a\\"b\\\\c\\nd');
  });

  it('turn other controls into ?, lone surrogates into U+FFFD, and cut at MAX_VALUE_CHARS', () => {
    expect(cleanValue('x\u001b[2J\u0007\r\t\u0085y')).toBe('x?[2J????y');
    expect(cleanValue('ok\nline')).toBe('ok\nline');
    expect(cleanValue('a\ud800b\udc00c\ud83d\ude00')).toBe('a\ufffdb\ufffdc\ud83d\ude00');
    const long = cleanValue('é'.repeat(5000));
    expect([...long]).toHaveLength(MAX_VALUE_CHARS);
    expect(long.endsWith('é…')).toBe(true);
    expect(cleanValue('v'.repeat(MAX_VALUE_CHARS))).toBe('v'.repeat(MAX_VALUE_CHARS));
  });

  it('make exact series lines', () => {
    expect(seriesLine('m', { id: '/docker/x', container_label_a: 'q"\\\n\u001b' }, 1.5)).toBe('m{id="/docker/x",container_label_a="q\\"\\\\\\n?"} 1.5');
    expect(seriesLine('up', {}, 1)).toBe('up 1');
    expect(seriesLine('big', { l: 'v' }, 2 ** 62)).toBe('big{l="v"} 4611686018427388000');
  });
});
