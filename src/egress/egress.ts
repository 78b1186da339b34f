/**
 * Egress: where a room's avatar goes besides its WebRTC viewers (an RTMP/SRT ingest through ffmpeg, a v4l2
 * virtual camera through ffmpeg, an external WHIP server). Every egress takes the room's frames through `push`
 * (cheap: it only keeps the newest frame or hands it to an encoder) and reports a state the web client shows.
 */
import type { VideoFrame } from '../media/frame.ts';

export type EgressKind = 'rtmp' | 'srt' | 'v4l2' | 'y4m' | 'whip';

/**
 * starting: first connection or process start under way · live: frames are flowing · restarting: it died and
 * comes back after a backoff · failed: given up (a setting is wrong; the message says which) · stopped: closed.
 */
export type EgressState = 'starting' | 'live' | 'restarting' | 'failed' | 'stopped';

export interface EgressStatus {
  kind: EgressKind;
  /** Where it goes, with secrets (stream keys, tokens) masked. */
  target: string;
  state: EgressState;
  restarts: number;
  framesWritten: number;
  /** Frames dropped because the sink was not keeping up. */
  framesDropped: number;
  lastError?: string;
  /** The next restart, ms from now (state restarting). */
  retryInMs?: number;
}

export interface Egress {
  readonly kind: EgressKind;
  push(frame: VideoFrame): void;
  /** The room lost its publisher: stop showing the last avatar frame (a frozen face is worse than black). */
  idle?(): void;
  status(): EgressStatus;
  close(): Promise<void>;
}

/** Exponential backoff: 1 s, 2 s, 4 s … capped at `maxMs`. `attempt` counts from 0. */
export function backoffMs(attempt: number, initialMs = 1000, maxMs = 30_000): number {
  return Math.min(maxMs, initialMs * 2 ** Math.max(0, Math.min(attempt, 30)));
}

/** The secret parts of a URL (password, stream key, secret query values), for scrubbing tool output. */
export function urlSecrets(raw: string): string[] {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return [raw];
  }
  const out = [raw];
  if (u.password) out.push(u.password, decodeURIComponent(u.password));
  for (const [k, v] of u.searchParams) if (v && /pass|key|token|secret|streamid/i.test(k)) out.push(v, encodeURIComponent(v));
  const segments = u.pathname.split('/').filter(Boolean);
  if ((u.protocol === 'rtmp:' || u.protocol === 'rtmps:') && segments.length >= 2) out.push(segments[segments.length - 1]);
  return [...new Set(out.filter((x) => x.length >= 4))].sort((a, b) => b.length - a.length);
}

/** `text` with every secret replaced by ****. (Strings under 4 characters are left alone: they would mangle words.) */
export function scrub(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of [...secrets].sort((a, b) => b.length - a.length)) if (s.length >= 4) out = out.split(s).join('****');
  return out;
}

/**
 * A URL for display: the password and the stream key (an RTMP URL's last path segment, SRT's passphrase and
 * streamid) masked, so logs and the web client never show them.
 */
export function maskUrl(raw: string): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return raw.replace(/[^/]{5,}$/, '****');
  }
  if (u.password) u.password = '****';
  for (const k of [...u.searchParams.keys()]) if (/pass|key|token|secret|streamid/i.test(k)) u.searchParams.set(k, '****');
  if ((u.protocol === 'rtmp:' || u.protocol === 'rtmps:') && u.pathname.split('/').filter(Boolean).length >= 2) {
    u.pathname = u.pathname.replace(/[^/]+$/, '****');
  }
  return u.toString().replace(/%2A/g, '*');
}
