// A worker thread's entry point: TypeScript through tsx's loader, as in bin/xportrait-cam.mjs, then the host.
import { register } from 'tsx/esm/api';

register();
await import('./host.ts');
