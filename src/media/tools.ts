/**
 * Where the ffmpeg and ffprobe binaries are. The configuration layer sets them once at start
 * (src/config/environment.ts reads FFMPEG / FFPROBE); every reader, writer and egress that spawns one takes its own
 * `ffmpeg`/`ffprobe` option first and this setting otherwise. A module-level setting rather than an option threaded
 * through: ffmpeg is spawned from the media readers and writers, the egress, the engines (initial videos), eval and
 * the CLI, each with its own options object, and the binary is one fact about the machine.
 */
export interface MediaTools {
  ffmpeg: string;
  ffprobe: string;
}

const DEFAULT_TOOLS: MediaTools = { ffmpeg: 'ffmpeg', ffprobe: 'ffprobe' };
let tools: MediaTools = { ...DEFAULT_TOOLS };

/** Set the binaries (those left out fall back to `ffmpeg`/`ffprobe` on PATH). */
export function configureMediaTools(t: Partial<MediaTools>): void {
  tools = { ffmpeg: t.ffmpeg ?? DEFAULT_TOOLS.ffmpeg, ffprobe: t.ffprobe ?? DEFAULT_TOOLS.ffprobe };
}

export function mediaTools(): Readonly<MediaTools> {
  return tools;
}
