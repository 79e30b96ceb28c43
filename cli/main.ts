// `ciel` command line. Each command lives in its own file; this one only wires them up.
import { Command } from 'commander';
import { CielError } from '../common/errors.ts';
import { registerAutoscale } from './autoscale.ts';
import { registerBuild } from './build.ts';
import { registerInstrument } from './instrument.ts';
import { registerMonitor } from './monitor.ts';

const program = new Command();
program
  .name('ciel')
  .description('Watch the containers inside VMs from outside the VM, and scale out only the hot one.')
  .version('0.1.0')
  .showHelpAfterError();

registerInstrument(program);
registerBuild(program);
registerMonitor(program);
registerAutoscale(program);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CielError) {
    process.stderr.write(`ciel: ${e.message}\n`);
    process.exit(1);
  }
  throw e;
}
