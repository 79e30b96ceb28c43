// `npm run bench [name]`: figures and ratios against baselines measured in the same run.
// Names: gmap, build, monitor, overhead, scaling, fuzz-elf, docker, docker-100, traffic (the real-guest ones boot TCG guests and take minutes).
// `--kernel RELEASE|LINE[,...]` (or CIEL_BENCH_KERNEL) picks the guest kernel(s) of `monitor` (default
// 6.1.0-56-amd64) and the releases of `build` (default one per line): e.g.
// `npm run bench monitor -- --kernel 5.10,6.1,6.12,7.x` (or `all`) runs it once per line.
import { benchBuild, BENCH_RELEASES } from './build.ts';
import { benchDocker } from './docker.ts';
import { benchDockerMany } from './docker-many.ts';
import { benchFuzzElf } from './fuzz-elf.ts';
import { benchGmap } from './gmap.ts';
import { benchKernels, benchMonitorKernels } from './monitor.ts';
import { benchOverhead } from './overhead.ts';
import { benchScaling } from './scaling.ts';
import { benchTraffic } from './traffic.ts';

const all: Record<string, () => Promise<unknown>> = {
  gmap: () => benchGmap(),
  build: () => benchBuild(console.log, kernelSpec ? benchKernels(kernelSpec) : BENCH_RELEASES),
  monitor: () => benchMonitorKernels(benchKernels(kernelSpec)),
  overhead: () => benchOverhead(),
  scaling: () => benchScaling(),
  'fuzz-elf': () => benchFuzzElf({ cases: 10_000 }),
  docker: () => benchDocker(),
  'docker-100': () => benchDockerMany(),
  traffic: () => benchTraffic(),
};
const args = process.argv.slice(2);
const only: string[] = [];
let kernelSpec = process.env.CIEL_BENCH_KERNEL;
for (let i = 0; i < args.length; i++) {
  const a = args[i]!;
  if (a === '--kernel') {
    if (i + 1 >= args.length) throw new Error('--kernel needs a release or a line (e.g. 7.3.4+deb13-amd64, 7.x, all)');
    kernelSpec = args[++i];
  }
  else if (a.startsWith('--kernel=')) kernelSpec = a.slice('--kernel='.length);
  else if (a.startsWith('-')) throw new Error(`unknown option '${a}' (have: --kernel RELEASE|LINE[,...])`);
  else only.push(a);
}
for (const name of only.length ? only : Object.keys(all)) {
  const run = all[name];
  if (!run) throw new Error(`unknown benchmark '${name}' (have: ${Object.keys(all).join(', ')})`);
  await run();
  console.log('');
}
