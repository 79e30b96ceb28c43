// `npm run bench [gmap|monitor]`: figures and ratios against baselines measured in the same run.
import { benchGmap } from './gmap.ts';
import { benchMonitor } from './monitor.ts';

const only = process.argv[2];
if (!only || only === 'gmap') await benchGmap();
if (!only || only === 'monitor') await benchMonitor();
