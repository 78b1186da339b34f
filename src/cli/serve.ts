/**
 * `xportrait-cam serve`: the live server (what `npm start` runs). Every flag can come from an environment variable;
 * all values are validated together at start (src/config/serve-config.ts).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { parseServeConfig, serveDefault, type ServeConfig } from '../config/serve-config.ts';
import { ENGINE_NAMES } from '../engine/registry.ts';
import { DEFAULT_WEB_ROOT } from '../server/web-root.ts';
import { createLogger } from '../util/log.ts';
import { UsageError } from './usage-error.ts';
import { engineOptionHelp } from '../config/engine-options.ts';
import { errorMessage } from '../util/error-message.ts';
import { installProcessPolicy } from './process-policy.ts';

export function addServeCommand(program: Command): void {
  program
    .command('serve')
    .description('Serve the web client and animate webcams over WebRTC (what `npm start` runs).')
    .addOption(new Option('-p, --port <port>', 'TCP port (0 picks a free one)').env('PORT').default(serveDefault('port')))
    .addOption(new Option('--host <host>', 'interface to listen on').env('HOST').default(serveDefault('host')))
    .addOption(new Option('-e, --engine <name>', `default engine (${ENGINE_NAMES.join(', ')})`).env('XPORTRAIT_ENGINE').default(serveDefault('engine')))
    .addOption(new Option('--pack <dir>', 'model pack for --engine xportrait (built with `pack build`)').env('XPORTRAIT_PACK'))
    .addOption(new Option('-O, --engine-opt <key=value...>', `engine option, repeatable (${engineOptionHelp()})`))
    .addOption(new Option('--max-sessions <n>', 'live sessions at once; more get a "server_full" error').env('XPORTRAIT_MAX_SESSIONS').default(serveDefault('maxSessions')))
    .addOption(new Option('--tls-cert <file>', 'PEM certificate: serve HTTPS (browsers allow the camera only on https or localhost)').env('XPORTRAIT_TLS_CERT'))
    .addOption(new Option('--tls-key <file>', 'PEM private key for --tls-cert').env('XPORTRAIT_TLS_KEY'))
    .addOption(
      new Option('--ice-servers <list>', 'STUN/TURN servers: comma-separated URLs (turn:user:pass@host:port) or a JSON RTCIceServer array').env(
        'XPORTRAIT_ICE_SERVERS',
      ),
    )
    .addOption(new Option('--turn-urls <list>', 'TURN servers with time-limited credentials: comma-separated turn:/turns: URLs (no user:pass), needs --turn-secret').env('XPORTRAIT_TURN_URLS'))
    .addOption(new Option('--turn-secret <secret>', "the TURN server's shared secret (coturn static-auth-secret): each page and session gets credentials minted from it").env('XPORTRAIT_TURN_SECRET'))
    .addOption(new Option('--turn-ttl <seconds>', 'lifetime of the minted TURN credentials').env('XPORTRAIT_TURN_TTL').default(serveDefault('turnTtl')))
    .addOption(new Option('--ice-transport-policy <policy>', 'all, or relay: the page and the server use TURN relay candidates only').env('XPORTRAIT_ICE_TRANSPORT_POLICY').default(serveDefault('iceTransportPolicy')))
    .addOption(
      new Option('--drain-timeout <seconds>', 'on SIGTERM, take no new sessions (/readyz 503) and let running ones play on for up to this long before closing; a second signal closes at once')
        .env('XPORTRAIT_DRAIN_TIMEOUT')
        .default(serveDefault('drainTimeout')),
    )
    .addOption(new Option('--max-upload-bytes <n>', 'largest portrait upload, bytes').env('XPORTRAIT_MAX_UPLOAD_BYTES').default(serveDefault('maxUploadBytes')))
    .addOption(new Option('--max-portrait-pixels <n>', 'largest portrait, width x height pixels').env('XPORTRAIT_MAX_PORTRAIT_PIXELS').default(serveDefault('maxPortraitPixels')))
    .addOption(new Option('--output-size <n>', 'avatar size in pixels, square (passthrough keeps the camera size)').env('XPORTRAIT_OUTPUT_SIZE').default(serveDefault('outputSize')))
    .addOption(new Option('--output-frame <WxH>', 'frame every output gets, e.g. 1280x720 for meetings (16:9): the avatar centred in it over --output-background (default: the avatar as rendered)').env('XPORTRAIT_OUTPUT_FRAME'))
    .addOption(new Option('--output-avatar-height <share>', 'share of the --output-frame height the avatar takes (above 0, at most 1)').env('XPORTRAIT_OUTPUT_AVATAR_HEIGHT').default(serveDefault('outputAvatarHeight')))
    .addOption(new Option('--output-background <blur|#rrggbb|file>', 'behind the avatar in --output-frame: blur (its own edges extended and blurred), a colour, or an image file (scaled to cover the frame)').env('XPORTRAIT_OUTPUT_BACKGROUND').default(serveDefault('outputBackground')))
    .addOption(new Option('--web-root <dir>', 'directory of the built web client').env('XPORTRAIT_WEB_ROOT'))
    .addOption(
      new Option('--tracking <mode>', 'who tracks faces: client (the browser, onnxruntime-web), server, or auto (the browser when it sends landmarks, else the server)')
        .env('XPORTRAIT_TRACKING')
        .default(serveDefault('tracking')),
    )
    .addOption(new Option('--face-device <device>', "the server's face tracker on cpu or webgpu (onnxruntime's WebGPU provider; docs/webgpu.md)").env('XPORTRAIT_FACE_DEVICE').default(serveDefault('faceDevice')))
    .addOption(new Option('--face-thread <on|off>', "the server's face tracker on a worker thread per session (a hang blocks nothing else)").env('XPORTRAIT_FACE_THREAD').default(serveDefault('faceThread')))
    .addOption(new Option('--metrics <on|off>', 'Prometheus metrics at /metrics (loopback clients only unless --metrics-token is set)').env('XPORTRAIT_METRICS').default(serveDefault('metrics')))
    .addOption(new Option('--metrics-token <token>', 'bearer token required for /metrics (lets a remote Prometheus scrape an exposed server)').env('XPORTRAIT_METRICS_TOKEN'))
    .addOption(new Option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent').env('LOG_LEVEL').default(serveDefault('logLevel')))
    .action(async (opts: Record<string, unknown>) => {
      let config: ServeConfig;
      try {
        config = parseServeConfig(opts, ENGINE_NAMES);
      } catch (err) {
        throw new UsageError(errorMessage(err));
      }
      const logger = createLogger({ level: config.logLevel });
      await ensureWebClient(config, logger);
      // Loaded here, not at the top: other commands should not pay for loading libwebrtc.
      const { XportraitServer } = await import('../server/server.ts');
      const server = await XportraitServer.start(config, { logger });
      // Signals and uncaught errors (src/cli/process-policy.ts); SIGTERM drains first with --drain-timeout. Exits
      // explicitly: libwebrtc's (@roamhq/wrtc) finalizers can abort a natural exit's environment teardown.
      installProcessPolicy({ logger, stop: () => server.close(), drain: config.drainTimeout > 0 ? () => server.drain(config.drainTimeout * 1000) : undefined });
      await new Promise<void>(() => {});
    });
}

/** `npm start` on a checkout whose client was never built (or was deleted) builds it first. */
async function ensureWebClient(config: ServeConfig, logger: ReturnType<typeof createLogger>): Promise<void> {
  const root = config.webRoot ?? DEFAULT_WEB_ROOT;
  if (existsSync(join(root, 'index.html'))) return;
  if (config.webRoot) throw new UsageError(`--web-root ${config.webRoot} has no index.html`);
  logger.info({ event: 'building_web_client' }, 'web client not built yet: building it');
  const { buildWeb } = await import('../../scripts/build-web.mjs');
  await buildWeb({ outdir: root, quiet: true });
}
