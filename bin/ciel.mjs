#!/usr/bin/env node
// Entry for `ciel`: the compiled JavaScript in dist/ (made by `npm run build`, shipped in the package).
// No TypeScript loader at run time: tsx is a development tool only.
import { existsSync } from 'node:fs';

const main = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(main)) {
  process.stderr.write('ciel: dist/ is missing: run `npm run build` in the checkout first\n');
  process.exit(1);
}
await import(main.href);
