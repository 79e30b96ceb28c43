#!/usr/bin/env node
// Entry for `npx ciel`: the sources are TypeScript, run through tsx's loader (no separate build step).
import { register } from 'tsx/esm/api';
register();
await import('../cli/main.ts');
