/**
 * The server under test, as its own process (`xportrait-cam serve` on a free loopback port), so its CPU and memory
 * are measured apart from the bench driver and the browser. Its JSON log goes to a file in the report directory.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const CLI_ENTRY = fileURLToPath(new URL('../../bin/xportrait-cam.mjs', import.meta.url));

export interface ServerProcessOptions {
  engine: string;
  outputSize: number;
  /** Extra `serve` arguments (e.g. --pack DIR, --web-root DIR). */
  args?: string[];
  env?: Record<string, string>;
  logFile: string;
  /** How long the server may take to listen (ms). */
  startTimeoutMs?: number;
}

export class ServerProcess {
  private constructor(
    readonly child: ChildProcess,
    readonly url: string,
    readonly exited: Promise<number | null>,
  ) {}

  get pid(): number {
    return this.child.pid ?? 0;
  }

  static async start(opts: ServerProcessOptions): Promise<ServerProcess> {
    const args = [
      CLI_ENTRY,
      'serve',
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--engine',
      opts.engine,
      '--output-size',
      String(opts.outputSize),
      '--log-level',
      'info',
      ...(opts.args ?? []),
    ];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
    const log = createWriteStream(opts.logFile);
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    void exited.then(() => log.end());
    let tail = '';
    const url = await new Promise<string>((resolve, reject) => {
      let buf = '';
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`the server did not start listening within ${Math.round((opts.startTimeoutMs ?? 60_000) / 1000)} s; its log: ${opts.logFile}`));
      }, opts.startTimeoutMs ?? 60_000);
      child.stdout!.on('data', (d: Buffer) => {
        log.write(d);
        buf += d.toString();
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          try {
            const rec = JSON.parse(line) as { event?: string; url?: string };
            if (rec.event === 'listening' && rec.url) {
              clearTimeout(timer);
              resolve(rec.url);
            }
          } catch {
            // not a JSON log line
          }
        }
      });
      child.stderr!.on('data', (d: Buffer) => {
        log.write(d);
        tail = (tail + d.toString()).slice(-2000);
      });
      void exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`the server exited (code ${code}) before listening: ${tail.trim() || `see ${opts.logFile}`}`));
      });
    });
    return new ServerProcess(child, url, exited);
  }

  /** SIGTERM (graceful: sessions closed), SIGKILL after `graceMs`. */
  async stop(graceMs = 8000): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    const killed = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(killed);
  }
}
