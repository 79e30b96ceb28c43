// `npm run bench`: every benchmark, figures and ratios against baselines measured in the same run.
import { benchGmap } from './gmap.ts';

const only = process.argv[2];
if (!only || only === 'gmap') await benchGmap();
