/**
 * The one place that loads @roamhq/wrtc (libwebrtc for Node; CommonJS with a native binding), so the rest of the
 * code imports typed names from here.
 */
import { createRequire } from 'node:module';
import type * as Wrtc from '@roamhq/wrtc';
import { withCandidates, type SdpCandidate } from './sdp.ts';

const require = createRequire(import.meta.url);
const wrtc = require('@roamhq/wrtc') as typeof Wrtc;

export const { RTCPeerConnection, MediaStream } = wrtc;
export const { RTCVideoSink, RTCVideoSource, i420ToRgba, rgbaToI420 } = wrtc.nonstandard;

/**
 * A wrtc peer's local candidates, collected from its `icecandidate` events from construction on, so the local SDP
 * is never read back from the binding.
 *
 * Why: `pc.localDescription` in @roamhq/wrtc serializes the native session description on the JavaScript thread
 * (`RTCPeerConnection::GetLocalDescription` -> `JsepSessionDescription::ToString` -> `SdpSerialize`) while WebRTC's
 * signaling thread adds each newly gathered candidate to that same description, unlocked. A read while candidates
 * are still coming in can serialize a collection being reallocated: a native crash (SIGSEGV in `SdpSerialize`,
 * caught in a core dump of this project's teardown test, docs/testing.md; node-webrtc issue 696). So offers and
 * answers are sent as createOffer/createAnswer returned them, with the candidates gathered so far written in
 * (sdp.ts, withCandidates).
 */
export class LocalCandidates {
  readonly list: SdpCandidate[] = [];
  #complete = false;
  #ending = false;
  #waiters: Array<() => void> = [];
  readonly #onCandidate = (e: RTCPeerConnectionIceEvent): void => {
    if (e.candidate?.candidate) this.list.push({ candidate: e.candidate.candidate, sdpMid: e.candidate.sdpMid, sdpMLineIndex: e.candidate.sdpMLineIndex });
    else if (!e.candidate) this.#finish();
  };
  readonly #onGatheringState = (): void => {
    if (this.pc.iceGatheringState === 'complete') this.#finish();
  };

  /** Start listening before setLocalDescription, or early candidates are missed. */
  constructor(readonly pc: InstanceType<typeof RTCPeerConnection>) {
    pc.addEventListener('icecandidate', this.#onCandidate as EventListener);
    pc.addEventListener('icegatheringstatechange', this.#onGatheringState);
  }

  get complete(): boolean {
    return this.#complete;
  }

  /** Resolves when gathering is complete, or after `timeoutMs` with what has come so far. */
  gathered(timeoutMs: number): Promise<void> {
    if (this.#complete) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.#waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** `sdp` (from createOffer/createAnswer) with the candidates gathered so far. */
  sdp(sdp: string): string {
    return withCandidates(sdp, this.list, this.#complete);
  }

  /** Stop listening (the callers do, in a `finally`). */
  dispose(): void {
    this.pc.removeEventListener('icecandidate', this.#onCandidate as EventListener);
    this.pc.removeEventListener('icegatheringstatechange', this.#onGatheringState);
  }

  /**
   * Gathering is over once the binding's state says 'complete', but the candidate events queued before that may
   * not have reached JavaScript yet: the binding reads the state live while it dispatches the queue's first event
   * (its end-of-candidates event can come before the candidates). They all are dispatched in the same turn of the
   * event loop, so the end is taken one macrotask later.
   */
  #finish(): void {
    if (this.#ending) return;
    this.#ending = true;
    setImmediate(() => {
      this.#complete = true;
      for (const w of this.#waiters.splice(0)) w();
    });
  }
}

/**
 * setLocalDescription, wait for ICE gathering (at most `timeoutMs`), and return the trickle-less SDP: the
 * description's own SDP with the gathered candidates written in, never `pc.localDescription` (see LocalCandidates).
 */
export async function setLocalAndGather(pc: InstanceType<typeof RTCPeerConnection>, description: RTCSessionDescriptionInit, timeoutMs: number): Promise<string> {
  const candidates = new LocalCandidates(pc);
  try {
    await pc.setLocalDescription(description);
    await candidates.gathered(timeoutMs);
    return candidates.sdp(description.sdp ?? '');
  } finally {
    candidates.dispose();
  }
}
