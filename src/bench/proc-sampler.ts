/**
 * CPU and memory of the processes taking part in a bench, sampled from /proc (Linux) once a second:
 *
 * - the server process, with its CPU split by thread (libwebrtc names its threads: EncoderQueue, DecodingQueue,
 *   PeerConnectionF...; the main thread runs the JS: tracking, engine, conversion), grouped into stages;
 * - every process of the bench's chromium (found by its profile directory), labelled by chromium's --type;
 * - this process (the bench driver).
 *
 * CPU is in percent of one core over the sample interval; RSS in MiB. On other systems it samples nothing and
 * says so.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';

export interface ProcessSample {
  cpu: number;
  rssMiB: number;
  /** Processes aggregated under this label. */
  count: number;
}

export interface ResourceSample {
  /** Epoch ms. */
  t: number;
  processes: Record<string, ProcessSample>;
  /** Server CPU by thread group (percent of one core). */
  serverThreads: Record<string, number>;
  /** Renderer CPU by thread group (percent of one core). */
  rendererThreads: Record<string, number>;
  /** The machine's 1-minute load average (other work skews every figure). */
  load1?: number;
}

interface TickCount {
  ticks: number;
  at: number;
}

/** Thread name (comm, 15 chars max) -> stage group, for the server (libwebrtc + Node) and chromium's renderer. */
export function threadGroup(comm: string, isMain: boolean): string {
  if (isMain) return 'main';
  if (/^EncoderQueue|^VideoEncoder|^Vp8|^Vp9|^libvpx/i.test(comm)) return 'encode';
  if (/^DecodingQueue|^IncomingVideoSt|^VideoDecoder|^Decoder|^Media/i.test(comm)) return 'decode';
  if (/^PeerConnection|^rtp_send|^TaskQueuePaced|^rtc|^WebRTC|^AudioDevice|^TestAudio|^ModuleProcess|^network_thread|^signaling/i.test(comm)) return 'webrtc';
  if (/^Compositor|^VizCompositor|^CompositorTile/i.test(comm)) return 'compositor';
  if (/^libvips/.test(comm)) return 'libvips';
  return 'other';
}

/** Chromium renderer threads: WebRTC's codecs and media work run on the renderer's thread pool. */
export function rendererThreadGroup(comm: string, isMain: boolean): string {
  if (isMain) return 'main';
  if (/^ThreadPool/.test(comm)) return 'thread pool';
  if (/^Compositor|^VizCompositor/.test(comm)) return 'compositor';
  if (/^Chrome_ChildIO/.test(comm)) return 'io';
  if (/^WebRTC|^WebRtc|^rtc/i.test(comm)) return 'webrtc';
  return 'other';
}

export const RENDERER_THREAD_GROUPS: Record<string, string> = {
  main: 'main thread (page JS: frame-id readback, stats)',
  'thread pool': 'thread pool (WebRTC VP8 encode and decode, media pipeline)',
  compositor: 'compositor (video frames to the screen)',
  io: 'IPC',
  webrtc: 'WebRTC network and signaling threads',
  other: 'other threads',
};

export const SERVER_THREAD_GROUPS: Record<string, string> = {
  main: 'JS main thread (signaling, face tracking, engine, conversion)',
  encode: 'libwebrtc encode (EncoderQueue)',
  decode: 'libwebrtc decode (DecodingQueue, IncomingVideoStream)',
  webrtc: 'libwebrtc network, pacing, RTCP',
  libvips: 'sharp/libvips workers',
  other: 'other threads (V8 GC/compiler, libuv pool, onnxruntime intra-op)',
};

export class ResourceSampler {
  readonly samples: ResourceSample[] = [];
  readonly available = existsSync('/proc/self/stat');
  readonly #clkTck: number;
  readonly #pageKiB: number;
  readonly #last = new Map<string, TickCount>();
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly targets: { serverPid?: number; chromiumProfile?: string; intervalMs?: number },
  ) {
    let clk = 100;
    let page = 4096;
    if (this.available) {
      const conf = (name: string) => {
        try {
          return Number(execFileSync('getconf', [name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
        } catch {
          return NaN; // keep the Linux default
        }
      };
      const c = conf('CLK_TCK');
      const p = conf('PAGESIZE');
      if (c > 0) clk = c;
      if (p > 0) page = p;
    }
    this.#clkTck = clk;
    this.#pageKiB = page / 1024;
  }

  start(): void {
    if (!this.available || this.#timer) return;
    this.sample(); // first counts (rates start with the second sample)
    this.#timer = setInterval(() => this.sample(), this.targets.intervalMs ?? 1000);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Take one sample now (rates relative to the previous one). */
  sample(): ResourceSample | undefined {
    if (!this.available) return undefined;
    const now = performance.now();
    const s: ResourceSample = { t: performance.timeOrigin + now, processes: {}, serverThreads: {}, rendererThreads: {}, load1: Math.round(os.loadavg()[0] * 100) / 100 };
    const add = (label: string, pid: number) => {
      const st = readStat(`/proc/${pid}/stat`);
      if (!st) return;
      const cpu = this.#rate(`p${pid}`, st.ticks, now);
      const p = (s.processes[label] ??= { cpu: 0, rssMiB: 0, count: 0 });
      p.cpu += cpu ?? 0;
      p.rssMiB += (st.rssPages * this.#pageKiB) / 1024;
      p.count++;
    };
    add('bench driver', process.pid);
    const serverPid = this.targets.serverPid;
    if (serverPid) {
      add('server', serverPid);
      this.#threads(serverPid, now, s.serverThreads);
    }
    if (this.targets.chromiumProfile) {
      for (const { pid, label } of chromiumProcesses(this.targets.chromiumProfile)) {
        add(label, pid);
        if (label === 'chromium renderer') this.#threads(pid, now, s.rendererThreads, rendererThreadGroup);
      }
    }
    // the first reading only primes the counters (a rate needs two)
    if (this.#primed) this.samples.push(s);
    this.#primed = true;
    return s;
  }
  #primed = false;

  #threads(pid: number, now: number, into: Record<string, number>, group: (comm: string, isMain: boolean) => string = threadGroup): void {
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      return;
    }
    for (const tid of tids) {
      const st = readStat(`/proc/${pid}/task/${tid}/stat`);
      if (!st) continue;
      const cpu = this.#rate(`t${pid}/${tid}`, st.ticks, now);
      if (cpu === undefined) continue;
      const g = group(st.comm, Number(tid) === pid);
      into[g] = (into[g] ?? 0) + cpu;
    }
  }

  /** Percent of one core since the previous reading of this key. */
  #rate(key: string, ticks: number, now: number): number | undefined {
    const prev = this.#last.get(key);
    this.#last.set(key, { ticks, at: now });
    if (!prev || now <= prev.at) return undefined;
    return (((ticks - prev.ticks) / this.#clkTck) * 100_000) / (now - prev.at);
  }
}

function readStat(path: string): { comm: string; ticks: number; rssPages: number; ppid: number } | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  const f = text.slice(close + 2).split(' ');
  // fields after the comm: state(0) ppid(1) ... utime(11) stime(12) ... rss(21)
  return { comm: text.slice(open + 1, close), ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]), rssPages: Number(f[21]) };
}

/** The processes of the chromium whose profile is `profileDir`: its browser process and every descendant. */
export function chromiumProcesses(profileDir: string): { pid: number; label: string }[] {
  let pids: number[];
  try {
    pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number);
  } catch {
    return [];
  }
  const info = new Map<number, { ppid: number; cmd: string[] }>();
  for (const pid of pids) {
    try {
      // chromium rewrites its child processes' titles into one space-separated string
      const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0+$/, '');
      const cmd = raw.includes('\0') ? raw.split('\0') : raw.split(' ');
      const st = readStat(`/proc/${pid}/stat`);
      if (st) info.set(pid, { ppid: st.ppid, cmd });
    } catch {
      // gone
    }
  }
  const roots = [...info].filter(([, i]) => !i.cmd.some((a) => a.startsWith('--type=')) && i.cmd.some((a) => a === `--user-data-dir=${profileDir}`)).map(([pid]) => pid);
  const inTree = new Set(roots);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, i] of info) {
      if (!inTree.has(pid) && inTree.has(i.ppid)) {
        inTree.add(pid);
        grew = true;
      }
    }
  }
  return [...inTree].map((pid) => {
    const cmd = info.get(pid)?.cmd ?? [];
    const type = cmd.find((a) => a.startsWith('--type='))?.slice(7);
    const sub = cmd.find((a) => a.startsWith('--utility-sub-type='))?.slice(19);
    let label = 'chromium browser';
    if (type === 'renderer') label = 'chromium renderer';
    else if (type === 'gpu-process') label = 'chromium gpu';
    else if (type === 'utility') label = `chromium utility${sub ? ` (${sub.replace(/\.mojom\..*$/, '')})` : ''}`;
    else if (type === 'zygote') label = 'chromium zygote';
    else if (type) label = `chromium ${type}`;
    return { pid, label };
  });
}
