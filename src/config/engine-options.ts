/**
 * Engine options from the environment: the only place XPORTRAIT_WARP_* is read. An explicit `-O key=value` wins
 * over the environment; each engine sees only its own variables (warp's `device` must not become xportrait's).
 * The engines parse and default the merged options once, when they load (warp: src/engine/warp/options.ts,
 * xportrait: src/engine/xportrait/options.ts).
 */
import { WARP_OPTION_HELP } from '../engine/warp/options.ts';
import { XPORTRAIT_OPTION_KEYS } from '../engine/xportrait/options.ts';

const ENV_OPTIONS: Record<string, Record<string, string>> = {
  warp: { device: 'XPORTRAIT_WARP_DEVICE', resampler: 'XPORTRAIT_WARP_RESAMPLER' },
};

/** The options `engine` loads with: its environment defaults under the explicit ones. */
export function engineOptionsFor(engine: string, explicit: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): Record<string, unknown> {
  const fromEnv: Record<string, unknown> = {};
  for (const [key, name] of Object.entries(ENV_OPTIONS[engine] ?? {})) if (env[name] !== undefined) fromEnv[key] = env[name];
  return { ...fromEnv, ...explicit };
}

/** `-O` keys per engine, for --help. */
export function engineOptionHelp(): string {
  return `warp: ${Object.keys(WARP_OPTION_HELP).join(', ')}; xportrait: ${XPORTRAIT_OPTION_KEYS.join(', ')}`;
}
