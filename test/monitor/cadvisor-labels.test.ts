import { describe, expect, it } from 'vitest';
import { cleanValue, containerLabelName, dockerLabelSet, escapeValue, MAX_VALUE_CHARS, seriesLine } from '../../monitor/cadvisor-labels.ts';

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
