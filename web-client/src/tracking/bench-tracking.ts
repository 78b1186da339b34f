/**
 * Face tracking for the Bench tab (bench-page.ts), so `xportrait-cam bench` can compare where faces are tracked:
 * `?tracking=client` (the page tracks and sends landmarks beside its video) or `?tracking=landmarks` (landmarks only,
 * no video); without the parameter the page sends video only and the server tracks.
 *
 * Frame ids: the landmark message carries the camera frame's id — read from the picture by the worker when the
 * camera pictures carry the strip (the bench's fake camera), or the id the page's CameraStamper drew last — so the
 * server's bench tap keeps glass-to-glass per frame in every mode.
 */
import { BrowserTracking, createLandmarkChannel, type BrowserTrackingStats } from './browser-tracking.ts';
import type { TrackingBackend } from './protocol.ts';

export type BenchTrackingMode = 'client' | 'landmarks';

export class BenchTracking {
  #tracker: BrowserTracking | undefined;

  private constructor(
    readonly mode: BenchTrackingMode,
    private readonly params: URLSearchParams,
  ) {}

  /** From the page's URL (`tracking=client|landmarks`); undefined when the server is to track. */
  static fromParams(params: URLSearchParams): BenchTracking | undefined {
    const t = params.get('tracking');
    return t === 'client' || t === 'landmarks' ? new BenchTracking(t, params) : undefined;
  }

  /** The offer's `tracking` field. */
  get offer(): 'client' | 'landmarks' {
    return this.mode;
  }

  get sendVideo(): boolean {
    return this.mode === 'client';
  }

  /** Load onnxruntime-web and the models (before connecting: the bench measures steady state, not start-up). */
  async prepare(): Promise<void> {
    if (this.#tracker) return;
    this.#tracker = await BrowserTracking.create({
      backend: (this.params.get('ortBackend') ?? 'auto') as TrackingBackend,
      threads: Number(this.params.get('ortThreads')) || undefined,
    });
  }

  /** Open the landmark channel on the session's peer connection (before its offer). */
  attach(pc: RTCPeerConnection): void {
    if (!this.#tracker) throw new Error('BenchTracking.attach() before prepare()');
    this.#tracker.channel = createLandmarkChannel(pc);
  }

  /** Track the camera preview; `frameId` gives the id the page drew into the picture it sends (stamp mode). */
  start(video: HTMLVideoElement, frameId?: () => number | undefined): void {
    if (!this.#tracker) return;
    this.#tracker.frameIdSource = frameId;
    this.#tracker.start(video);
  }

  stop(): void {
    if (!this.#tracker) return;
    this.#tracker.stop();
    this.#tracker.channel = undefined;
  }

  stats(): (BrowserTrackingStats & { mode: BenchTrackingMode }) | undefined {
    return this.#tracker ? { mode: this.mode, ...this.#tracker.stats() } : undefined;
  }
}
