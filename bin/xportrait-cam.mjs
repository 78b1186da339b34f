#!/usr/bin/env node
// Entry point. TypeScript runs through tsx's loader (see README "Why tsx"): no build step, no stale dist/.
import { register } from 'tsx/esm/api';
register();
const { main } = await import('../src/cli/main.ts');
await main(process.argv);
