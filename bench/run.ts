// `npm run bench [name]`: figures and ratios against baselines measured in the same run.
// Names: gmap, build, monitor, overhead, scaling, fuzz-elf, docker, docker-100, traffic (the real-guest ones boot TCG guests and take minutes).
import { benchBuild } from './build.ts';
import { benchDocker } from './docker.ts';
import { benchDockerMany } from './docker-many.ts';
import { benchFuzzElf } from './fuzz-elf.ts';
import { benchGmap } from './gmap.ts';
import { benchMonitor } from './monitor.ts';
import { benchOverhead } from './overhead.ts';
import { benchScaling } from './scaling.ts';
import { benchTraffic } from './traffic.ts';

const all: Record<string, () => Promise<unknown>> = {
  gmap: () => benchGmap(),
  build: () => benchBuild(),
  monitor: () => benchMonitor(),
  overhead: () => benchOverhead(),
  scaling: () => benchScaling(),
  'fuzz-elf': () => benchFuzzElf({ cases: 10_000 }),
  docker: () => benchDocker(),
  'docker-100': () => benchDockerMany(),
  traffic: () => benchTraffic(),
};
const only = process.argv.slice(2);
for (const name of only.length ? only : Object.keys(all)) {
  const run = all[name];
  if (!run) throw new Error(`unknown benchmark '${name}' (have: ${Object.keys(all).join(', ')})`);
  await run();
  console.log('');
}
