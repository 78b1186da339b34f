/**
 * `serve` settings for avatar outputs (rooms, tokens, viewers, egress): the zod fields that serve-config.ts spreads
 * into its schema, their cross-checks, and the commander options (added to `serve` by src/cli/serve-outputs.ts).
 */
import { Option } from 'commander';
import { z } from 'zod';
import { schemaDefault } from './schema-default.ts';
import { wholeNumber } from './whole-number.ts';
import { MIN_SECRET_LENGTH, ROOM_NAME, ROOM_NAME_RULE } from '../server/auth.ts';
import { INSTANCE_ID, INSTANCE_PARAM } from '../protocol/instance.ts';
import { classifyVirtualCamera } from '../egress/ffmpeg-egress.ts';
import { errorMessage } from '../util/error-message.ts';


const urlWithScheme = (schemes: string[], example: string) =>
  z
    .string()
    .trim()
    .refine(
      (u) => {
        try {
          return schemes.includes(new URL(u).protocol);
        } catch {
          return false;
        }
      },
      { message: `must be a ${schemes.map((s) => `${s}//`).join(' or ')} URL, e.g. ${example}` },
    );

export const outputsConfigShape = {
  /** Signs and checks access tokens; without it only loopback clients may connect. */
  secret: z.string().min(MIN_SECRET_LENGTH, `must be at least ${MIN_SECRET_LENGTH} characters (e.g. openssl rand -hex 32)`).optional(),
  /** The room the web client publishes into by default, and the one egress streams. */
  room: z.string().trim().regex(ROOM_NAME, `must be ${ROOM_NAME_RULE}`).default('main'),
  maxViewers: wholeNumber(1, 1000).default(16),
  maxRooms: wholeNumber(1, 1000).default(16),
  /** The relay encoder's pinned bitrate, kbit/s. */
  viewerBitrate: wholeNumber(100, 20_000).default(1500),
  whipUrl: urlWithScheme(['http:', 'https:'], 'https://sfu.example.org/whip/live').optional(),
  whipToken: z.string().min(1).optional(),
  rtmpUrl: urlWithScheme(['rtmp:', 'rtmps:', 'srt:'], 'rtmp://a.rtmp.youtube.com/live2/STREAM-KEY').optional(),
  v4l2: z.string().trim().min(1).optional(),
  /** Encoder bitrate for RTMP/SRT and WHIP, kbit/s. */
  egressBitrate: wholeNumber(100, 50_000).default(2500),
  egressFps: wholeNumber(1, 60).default(30),
  /**
   * This server's name behind a load balancer (issue 19): the links to its rooms (viewer, OBS, WHEP and the WHEP
   * resource) carry `?xpcam=<name>`, which deploy/haproxy.cfg turns into its stickiness cookie, so a viewer who never
   * loaded a page from it still lands on the server that holds the room. Must equal the server's `cookie` there.
   */
  instanceId: z
    .string()
    .trim()
    .regex(INSTANCE_ID, 'must be 1-64 letters, digits, "_" or "-" (the cookie value of this server in haproxy.cfg)')
    .optional(),
  /** How others reach this server (links in logs and the page), e.g. https://cam.example.org. */
  publicUrl: z
    .string()
    .trim()
    .url('must be a URL like https://cam.example.org:8080')
    .transform((u) => u.replace(/\/+$/, ''))
    .optional(),
};

/** Cross-checks; `add` reports a problem on a field. */
export function refineOutputsConfig(c: { v4l2?: string; whipToken?: string; whipUrl?: string }, add: (path: string, message: string) => void): void {
  if (c.v4l2) {
    try {
      classifyVirtualCamera(c.v4l2);
    } catch (err) {
      add('v4l2', errorMessage(err));
    }
  }
  if (c.whipToken && !c.whipUrl) add('whipToken', 'needs --whip-url');
}

/** The commander options for these settings (every one with its environment variable). */
export function outputOptions(): Option[] {
  return [
    new Option('--secret <secret>', `sign and require access tokens (>= ${MIN_SECRET_LENGTH} chars; tokens come from \`xportrait-cam token\`); without it only this machine may connect`).env('XPORTRAIT_SECRET'),
    new Option('--room <name>', 'room the web client publishes into by default, and that --rtmp-url/--v4l2/--whip-url stream').env('XPORTRAIT_ROOM').default(schemaDefault(outputsConfigShape.room)),
    new Option('--max-viewers <n>', 'WebRTC viewers per room (all share one encode)').env('XPORTRAIT_MAX_VIEWERS').default(schemaDefault(outputsConfigShape.maxViewers)),
    new Option('--max-rooms <n>', 'rooms open at once').env('XPORTRAIT_MAX_ROOMS').default(schemaDefault(outputsConfigShape.maxRooms)),
    new Option('--viewer-bitrate <kbps>', 'video bitrate of the one encode viewers share (pinned: viewers send no bandwidth feedback)').env('XPORTRAIT_VIEWER_BITRATE').default(schemaDefault(outputsConfigShape.viewerBitrate)),
    new Option('--whip-url <url>', 'also publish the room to this WHIP endpoint (an external SFU: LiveKit, Cloudflare, Janus...)').env('XPORTRAIT_WHIP_URL'),
    new Option('--whip-token <token>', 'bearer token for --whip-url').env('XPORTRAIT_WHIP_TOKEN'),
    new Option('--rtmp-url <url>', 'also stream the room through ffmpeg to rtmp://, rtmps:// or srt:// (H.264 + silent AAC)').env('XPORTRAIT_RTMP_URL'),
    new Option('--v4l2 <device>', 'also write the room to a v4l2loopback camera (/dev/videoN) through ffmpeg; a FIFO or other path gets y4m').env('XPORTRAIT_V4L2'),
    new Option('--egress-bitrate <kbps>', 'video bitrate for --rtmp-url and --whip-url').env('XPORTRAIT_EGRESS_BITRATE').default(schemaDefault(outputsConfigShape.egressBitrate)),
    new Option('--egress-fps <n>', 'frame rate of --rtmp-url and --v4l2 output (the newest avatar frame is repeated as needed)').env('XPORTRAIT_EGRESS_FPS').default(schemaDefault(outputsConfigShape.egressFps)),
    new Option('--public-url <url>', 'how other machines reach this server, for the links it prints and shows').env('XPORTRAIT_PUBLIC_URL'),
    new Option('--instance-id <name>', `this server's name behind a load balancer: links to its rooms carry ?${INSTANCE_PARAM}=<name> (deploy/haproxy.cfg routes on it)`).env('XPORTRAIT_INSTANCE_ID'),
  ];
}
