/**
 * `serve` settings that bound what one client (or all of them) may make the server do, and the HTTP security
 * choices: the zod fields serve-config.ts spreads into its schema, and the commander options (added to `serve` by
 * src/cli/serve-limits.ts). Each limit, when hit, answers the client with a clear error and counts in /metrics
 * (`xportrait_limit_hits_total{limit}`); docs/reliability.md lists them.
 */
import { Option } from 'commander';
import { z } from 'zod';
import { schemaDefault } from './schema-default.ts';
import { wholeNumber } from './whole-number.ts';

/** An origin as browsers send it in Origin: scheme://host[:port], no path. */
const ORIGIN = /^[a-z][a-z0-9+.-]*:\/\/[A-Za-z0-9.-]+(?::\d{1,5})?$|^[a-z][a-z0-9+.-]*:\/\/\[[0-9A-Fa-f:.]+\](?::\d{1,5})?$/;

/**
 * `--cors`: which other origins may read the cross-origin endpoints (WHEP, /api/rooms) and open the signaling
 * socket. `auto` (default): any origin once `--secret` is set (every such request then needs a token, which a
 * foreign page cannot have unless the user gave it one), none without a secret (the server then trusts loopback
 * clients, and every web page the user opens is a loopback client). `none`, `*`, or a comma-separated list.
 */
export type CorsSetting = { mode: 'auto' } | { mode: 'none' } | { mode: 'any' } | { mode: 'list'; origins: string[] };

/** `--cors`'s default, as its flag states it (the field below is a transform, which holds no plain default). */
export const CORS_DEFAULT = 'auto';

const corsSetting = z
  .string()
  .trim()
  .default(CORS_DEFAULT)
  .transform((v, ctx): CorsSetting => {
    if (v === 'auto') return { mode: 'auto' };
    if (v === 'none' || v === '') return { mode: 'none' };
    if (v === '*') return { mode: 'any' };
    const origins = v.split(',').map((o) => o.trim().replace(/\/+$/, ''));
    const bad = origins.filter((o) => !ORIGIN.test(o));
    if (bad.length) {
      ctx.addIssue({ code: 'custom', message: `not an origin (scheme://host[:port]): ${bad.join(', ')}; or use auto, none or *` });
      return z.NEVER;
    }
    return { mode: 'list', origins };
  });

export const limitsConfigShape = {
  /** Serve the web client's source maps (.map): off by default, they publish the client's source. */
  sourceMaps: z.enum(['on', 'off']).default('off'),
  cors: corsSetting,
  /** Signaling WebSockets open at once from one client address. */
  maxConnectionsPerAddress: wholeNumber(1, 10_000).default(16),
  /** Signaling WebSockets open at once, all clients together. */
  maxConnections: wholeNumber(1, 100_000).default(256),
  /** Signaling messages per second per connection (token bucket refill rate). */
  messagesPerSecond: wholeNumber(1, 10_000).default(50),
  /**
   * Messages a connection may send at once above the rate (the bucket's size): an offer and its trickled ICE
   * candidates come in one burst, measured at 63 messages from a libwebrtc client on a machine with two addresses
   * per family and ten peers gathering at once (test/foundation/teardown.test.ts); more interfaces mean more.
   */
  messageBurst: wholeNumber(1, 10_000).default(200),
  /** Messages refused for the rate within 10 s after which the connection is closed (1008). */
  rateLimitCloseAfter: wholeNumber(1, 100_000).default(400),
  /** Messages waiting behind the one being handled (e.g. while an offer is answered); more are refused. */
  maxQueuedMessages: wholeNumber(1, 10_000).default(256),
  /** Offers a connection may queue while one is being answered (0: a second offer is refused at once). */
  maxQueuedOffers: wholeNumber(0, 16).default(0),
  /** Portrait uploads per minute from one client address. */
  uploadsPerMinute: wholeNumber(1, 100_000).default(30),
  /** An engine that takes longer than this on one frame makes its session `degraded` (the last frame is repeated). */
  engineStallMs: wholeNumber(50, 600_000).default(2000),
  /** An engine that takes longer than this on one frame has stopped answering: the session fails (engine_failed). */
  engineFailMs: wholeNumber(100, 3_600_000).default(60_000),
  /**
   * A session whose engine fails (throws, returns a picture of the wrong shape, or keeps a frame past
   * engineFallbackMs) carries on with the next cheaper engine the server has (xportrait -> warp -> passthrough) and
   * goes back to its own when it answers again; `off`: such a session fails (engine_failed) as before.
   */
  engineFallback: z.enum(['on', 'off']).default('on'),
  /** With a fallback: an engine this late on one frame hands the session to the cheaper engine. */
  engineFallbackMs: wholeNumber(100, 3_600_000).default(5000),
  /** With a fallback: first wait before the session's own engine is tried again; doubled after each failed try, up to 60 s. */
  engineRetryMs: wholeNumber(100, 600_000).default(5000),
  /** WebRTC viewers in all rooms together (each room also has --max-viewers). */
  maxViewersTotal: wholeNumber(1, 100_000).default(64),
  /** Largest camera frame a session takes, width × height; bigger frames are dropped and the client told. */
  maxFramePixels: wholeNumber(64 * 64, 8192 * 8192).default(1920 * 1080),
  /** Largest SDP accepted (signaling offers and WHEP offers), bytes. */
  maxSdpBytes: wholeNumber(1024, 256 * 1024).default(64 * 1024),
};

/** The commander options for these settings (every one with its environment variable). */
export function limitOptions(): Option[] {
  const d = (k: keyof typeof limitsConfigShape) => schemaDefault(limitsConfigShape[k]);
  return [
    new Option('--source-maps <on|off>', 'serve the web client\'s source maps').env('XPORTRAIT_SOURCE_MAPS').default(d('sourceMaps')),
    new Option('--cors <origins>', 'origins that may call WHEP, /api/rooms and /ws from other pages: auto (any with --secret, none without), none, * or a comma-separated list').env('XPORTRAIT_CORS').default(CORS_DEFAULT),
    new Option('--max-connections-per-address <n>', 'signaling WebSockets open at once from one client address').env('XPORTRAIT_MAX_CONNECTIONS_PER_ADDRESS').default(d('maxConnectionsPerAddress')),
    new Option('--max-connections <n>', 'signaling WebSockets open at once in total').env('XPORTRAIT_MAX_CONNECTIONS').default(d('maxConnections')),
    new Option('--messages-per-second <n>', 'signaling messages per second per connection; more get "rate_limited"').env('XPORTRAIT_MESSAGES_PER_SECOND').default(d('messagesPerSecond')),
    new Option('--message-burst <n>', 'signaling messages a connection may send at once above the rate').env('XPORTRAIT_MESSAGE_BURST').default(d('messageBurst')),
    new Option('--rate-limit-close-after <n>', 'messages refused for the rate within 10 s before the connection is closed').env('XPORTRAIT_RATE_LIMIT_CLOSE_AFTER').default(d('rateLimitCloseAfter')),
    new Option('--max-queued-messages <n>', 'signaling messages waiting per connection (while one is handled)').env('XPORTRAIT_MAX_QUEUED_MESSAGES').default(d('maxQueuedMessages')),
    new Option('--max-queued-offers <n>', 'offers a connection may queue while one is being answered').env('XPORTRAIT_MAX_QUEUED_OFFERS').default(d('maxQueuedOffers')),
    new Option('--uploads-per-minute <n>', 'portrait uploads per minute from one client address; more get 429').env('XPORTRAIT_UPLOADS_PER_MINUTE').default(d('uploadsPerMinute')),
    new Option('--engine-stall-ms <ms>', 'an engine slower than this on one frame: the session is "degraded" and repeats its last frame').env('XPORTRAIT_ENGINE_STALL_MS').default(d('engineStallMs')),
    new Option('--engine-fail-ms <ms>', 'an engine slower than this on one frame has stopped answering: the session fails').env('XPORTRAIT_ENGINE_FAIL_MS').default(d('engineFailMs')),
    new Option('--engine-fallback <on|off>', 'a session whose engine fails, returns a wrong-sized picture or passes --engine-fallback-ms on a frame carries on with the next cheaper engine (xportrait, warp, passthrough) and returns to its own when it answers again').env('XPORTRAIT_ENGINE_FALLBACK').default(d('engineFallback')),
    new Option('--engine-fallback-ms <ms>', 'with a fallback: an engine this late on one frame hands the session to the cheaper engine').env('XPORTRAIT_ENGINE_FALLBACK_MS').default(d('engineFallbackMs')),
    new Option('--engine-retry-ms <ms>', 'with a fallback: first wait before the session\'s own engine is tried again (doubled after each failed try, up to 60 s)').env('XPORTRAIT_ENGINE_RETRY_MS').default(d('engineRetryMs')),
    new Option('--max-viewers-total <n>', 'WebRTC viewers in all rooms together').env('XPORTRAIT_MAX_VIEWERS_TOTAL').default(d('maxViewersTotal')),
    new Option('--max-frame-pixels <n>', 'largest camera frame a session takes, width x height; bigger frames are dropped with a "frame_too_large" error').env('XPORTRAIT_MAX_FRAME_PIXELS').default(d('maxFramePixels')),
    new Option('--max-sdp-bytes <n>', 'largest SDP offer (signaling and WHEP), bytes').env('XPORTRAIT_MAX_SDP_BYTES').default(d('maxSdpBytes')),
  ];
}
