// A worker thread's entry point: TypeScript through tsx's loader, as in bin/xportrait-cam.mjs, then its host.
import { register } from 'tsx/esm/api';
import { workerData } from 'node:worker_threads';

register();
await import(workerData.host === 'analyzer' ? './analyzer-host.ts' : './engine-host.ts');
