// testbed/plot-svg.ts: the SVG plot.
import { describe, expect, it } from 'vitest';
import { plotSvg } from '../../testbed/plot-svg.ts';

describe('plotSvg()', () => {
  it('draws series, markers and a legend as well-formed SVG', () => {
    const svg = plotSvg({
      title: 'a <b> & c',
      xLabel: 't',
      yLabel: 'cpu',
      series: [
        { name: 'web', points: [[0, 5], [1, 90], [2, 140]] },
        { name: 'db', points: [[0, 8], [1, 8]] },
      ],
      markers: [{ x: 1.5, label: 'decision' }],
      hlines: [{ y: 90, label: 'threshold' }],
    });
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('a &lt;b&gt; &amp; c');
    expect(svg.match(/<path /g)).toHaveLength(2);
    expect(svg).toContain('>decision<');
    expect(svg).toContain('>web<');
    expect(svg.trim().endsWith('</svg>')).toBe(true);
  });
});
