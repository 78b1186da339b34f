/**
 * `serve` configuration: one zod schema for every flag / environment variable, validated once at start so a bad
 * value stops the server with a message that names the setting, instead of failing later mid-session.
 */
import { existsSync } from 'node:fs';
import { z } from 'zod';
import { schemaDefault } from './schema-default.ts';
import { wholeNumber } from './whole-number.ts';
import { outputsConfigShape, refineOutputsConfig } from './outputs-config.ts';
import { limitsConfigShape } from './limits-config.ts';
import { errorMessage } from '../util/error-message.ts';
import { BACKGROUND_RULE, parseBackground, parseFrameSize, type OutputFrameSpec } from '../media/output-frame.ts';


const fileExists = z.string().min(1).refine((p) => existsSync(p), { message: 'file does not exist' });

const iceServer = z.object({
  urls: z.union([z.string().regex(/^(stun|stuns|turn|turns):/, 'must start with stun:, stuns:, turn: or turns:'), z.array(z.string().regex(/^(stun|stuns|turn|turns):/)).min(1)]),
  username: z.string().optional(),
  credential: z.string().optional(),
});
export type IceServer = z.infer<typeof iceServer>;

/**
 * ICE servers as either a JSON array of RTCIceServer objects or a comma-separated list of URLs
 * (`stun:stun.example.org:3478,turn:user:pass@turn.example.org:3478`; user:pass@ is split into username/credential).
 */
export function parseIceServers(text: string): IceServer[] {
  const t = text.trim();
  if (t === '') return [];
  if (t.startsWith('[')) {
    let raw: unknown;
    try {
      raw = JSON.parse(t);
    } catch (err) {
      throw new Error(`not valid JSON (${errorMessage(err)})`);
    }
    return z.array(iceServer).parse(raw);
  }
  return t.split(',').map((entry) => {
    const url = entry.trim();
    const m = /^(turns?):([^:@]+):([^@]+)@(.+)$/.exec(url);
    const server = m ? { urls: `${m[1]}:${m[4]}`, username: m[2], credential: m[3] } : { urls: url };
    return iceServer.parse(server);
  });
}

export const serveConfigSchema = z
  .object({
    port: wholeNumber(0, 65535).default(8080),
    host: z.string().trim().min(1).default('0.0.0.0'),
    /** The product's default engine (CPU, no model pack needed); `serve --engine` overrides it. */
    engine: z.string().trim().min(1).default('warp'),
    /** Model pack directory for the xportrait engine (`pack build` output). */
    pack: z.string().trim().min(1).optional(),
    /** Engine options as key=value (e.g. steps=4, policy=kvcache, device=cuda), passed to the engine loaders. */
    engineOpt: z.array(z.string().regex(/^[A-Za-z][\w.-]*=.*$/, 'takes key=value')).default([]),
    maxSessions: wholeNumber(1, 1000).default(4),
    tlsCert: fileExists.optional(),
    tlsKey: fileExists.optional(),
    iceServers: z
      .union([z.string(), z.array(iceServer)])
      .default([])
      .transform((v, ctx) => {
        if (Array.isArray(v)) return v;
        try {
          return parseIceServers(v);
        } catch (err) {
          ctx.addIssue({ code: 'custom', message: err instanceof z.ZodError ? z.prettifyError(err) : errorMessage(err) });
          return z.NEVER;
        }
      }),
    /**
     * TURN servers whose credentials are minted per peer (TURN REST API, coturn `use-auth-secret`), comma-separated
     * turn:/turns: URLs without user:pass; needs --turn-secret.
     */
    turnUrls: z
      .union([z.string(), z.array(z.string())])
      .optional()
      .transform((v, ctx) => {
        const list = (typeof v === 'string' ? v.split(',') : (v ?? [])).map((u) => u.trim()).filter((u) => u !== '');
        for (const u of list) {
          if (!/^turns?:[^@\s]+$/.test(u)) ctx.addIssue({ code: 'custom', message: `"${u}" must be a turn: or turns: URL without user:pass@ (the credentials are minted from --turn-secret)` });
        }
        return list;
      }),
    /** The secret shared with the TURN server (coturn `static-auth-secret`); never sent to a page. */
    turnSecret: z.string().trim().min(16, 'must be at least 16 characters').optional(),
    /** How long minted TURN credentials stay valid, seconds (a session's TURN allocation is refreshed with them). */
    turnTtl: wholeNumber(60, 7 * 24 * 3600).default(24 * 3600),
    /** `relay`: both the page and the server use only TURN relay candidates (networks that allow nothing else). */
    iceTransportPolicy: z.enum(['all', 'relay']).default('all'),
    /** On SIGTERM: seconds the running sessions may play on (no new ones: /readyz 503) before the server closes; 0 closes at once. */
    drainTimeout: wholeNumber(0, 24 * 3600).default(0),
    /** Largest portrait upload accepted, bytes. */
    maxUploadBytes: wholeNumber(1024, 256 * 1024 * 1024).default(10 * 1024 * 1024),
    /** Largest portrait accepted, pixels (width x height), checked before decoding. */
    maxPortraitPixels: wholeNumber(64, 100_000_000).default(4096 * 4096),
    /** Avatar output size (engines that render at their own size scale to it; passthrough keeps the camera size). */
    outputSize: wholeNumber(64, 2048).default(512),
    /**
     * The output frame every output gets (src/media/output-frame.ts), e.g. 1280x720 for meetings: the avatar
     * centred in it over --output-background. Unset: the avatar as rendered (--output-size, square).
     */
    outputFrame: z
      .string()
      .trim()
      .transform((v, ctx) => {
        try {
          return parseFrameSize(v);
        } catch (err) {
          ctx.addIssue({ code: 'custom', message: errorMessage(err) });
          return z.NEVER;
        }
      })
      .optional(),
    /** Share of the output frame's height the avatar takes (with --output-frame). */
    outputAvatarHeight: z
      .union([z.number(), z.string().trim().regex(/^\d*\.?\d+$/, 'must be a number above 0 and at most 1, e.g. 0.9')])
      .transform(Number)
      .pipe(z.number().gt(0, 'must be above 0').max(1, 'must be at most 1 (the whole height)'))
      .default(1),
    /** Behind the avatar in the output frame: "blur" (its edges extended and blurred), #rrggbb, or an image file. */
    outputBackground: z
      .string()
      .trim()
      .superRefine((v, ctx) => {
        try {
          const b = parseBackground(v);
          if (b.kind === 'image' && !existsSync(b.path)) ctx.addIssue({ code: 'custom', message: `image file ${b.path} does not exist (${BACKGROUND_RULE})` });
        } catch (err) {
          ctx.addIssue({ code: 'custom', message: errorMessage(err) });
        }
      })
      .default('blur'),
    /** Directory of the built web client (default web-client/dist). */
    webRoot: z.string().min(1).optional(),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    /**
     * Who tracks faces (src/session/client-tracking.ts): `client` (the page, with onnxruntime-web), `server` (our
     * tracker on the decoded video), `auto` (the page's landmarks while it sends them, else the server).
     */
    /** Execution provider of the server's face tracker (BlazeFace, Face Mesh, Iris): cpu, or webgpu (docs/webgpu.md). */
    faceDevice: z.enum(['cpu', 'webgpu']).default('cpu'),
    /** The server's face tracker on a worker thread per session (src/engine/worker/worker-analyzer.ts): on or off. */
    faceThread: z.enum(['on', 'off']).default('on'),
    tracking: z.enum(['client', 'server', 'auto']).default('auto'),
    /** Prometheus metrics at GET /metrics (src/server/metrics.ts): on (loopback only unless a token is set) or off. */
    metrics: z.enum(['on', 'off']).default('on'),
    /** Bearer token that every /metrics request must carry; lets a remote Prometheus scrape an exposed server. */
    metricsToken: z.string().trim().min(16, 'must be at least 16 characters').optional(),
    /** Rooms, tokens, viewers and egress (src/config/outputs-config.ts). */
    ...outputsConfigShape,
    /** Limits per client and in total, source maps, CORS (src/config/limits-config.ts). */
    ...limitsConfigShape,
  })
  .superRefine((c, ctx) => {
    if (Boolean(c.tlsCert) !== Boolean(c.tlsKey)) {
      ctx.addIssue({ code: 'custom', path: [c.tlsCert ? 'tlsKey' : 'tlsCert'], message: '--tls-cert and --tls-key must be given together' });
    }
    if (c.turnSecret && c.turnUrls.length === 0) ctx.addIssue({ code: 'custom', path: ['turnUrls'], message: '--turn-secret needs --turn-urls (the TURN servers that share it)' });
    if (c.turnUrls.length > 0 && !c.turnSecret) ctx.addIssue({ code: 'custom', path: ['turnSecret'], message: '--turn-urls needs --turn-secret (coturn static-auth-secret); static TURN passwords go in --ice-servers' });
    if (c.iceTransportPolicy === 'relay' && c.turnUrls.length === 0 && !c.iceServers.some((s) => [s.urls].flat().some((u) => /^turns?:/.test(u)))) {
      ctx.addIssue({ code: 'custom', path: ['iceTransportPolicy'], message: 'relay needs a TURN server (--turn-urls with --turn-secret, or a turn: entry in --ice-servers)' });
    }
    if (c.outputSize % 2 !== 0) ctx.addIssue({ code: 'custom', path: ['outputSize'], message: 'must be even (I420 video)' });
    refineOutputsConfig(c, (path, message) => ctx.addIssue({ code: 'custom', path: [path], message }));
  });

export type ServeConfig = z.output<typeof serveConfigSchema>;

/** A `serve` setting's default, as its flag states it (src/cli/serve.ts): declared once, in the schema above. */
export function serveDefault(key: keyof typeof serveConfigSchema.shape): string {
  return schemaDefault(serveConfigSchema.shape[key]);
}
export type ServeConfigInput = z.input<typeof serveConfigSchema>;

/** Validate raw settings (strings from flags/env, or typed values); throws an Error listing every bad setting. */
export function parseServeConfig(raw: Record<string, unknown>, engineNames?: readonly string[]): ServeConfig {
  const result = serveConfigSchema.safeParse(raw);
  if (!result.success) {
    const lines = result.error.issues.map((i) => `  --${kebab(String(i.path[0] ?? ''))}: ${i.message}`);
    throw new Error(`invalid configuration:\n${lines.join('\n')}`);
  }
  if (engineNames && !engineNames.includes(result.data.engine)) {
    throw new Error(`invalid configuration:\n  --engine: unknown engine "${result.data.engine}" (available: ${engineNames.join(', ')})`);
  }
  return result.data;
}

/** The output frame (--output-frame with its avatar height and background), or undefined: the avatar as rendered. */
export function outputFrameSpecOf(c: Pick<ServeConfig, 'outputFrame' | 'outputAvatarHeight' | 'outputBackground'>): OutputFrameSpec | undefined {
  if (!c.outputFrame) return undefined;
  return { ...c.outputFrame, avatarHeight: c.outputAvatarHeight, background: parseBackground(c.outputBackground) };
}

/** The options every engine loader receives: `--pack` plus each `--engine-opt key=value`. */
export function engineOptionsOf(c: Pick<ServeConfig, 'pack' | 'engineOpt'>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (c.pack) out.pack = c.pack;
  for (const kv of c.engineOpt) {
    const i = kv.indexOf('=');
    out[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}

function kebab(s: string): string {
  return s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}
