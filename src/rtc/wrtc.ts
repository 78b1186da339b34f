/**
 * The one place that loads @roamhq/wrtc (libwebrtc for Node; CommonJS with a native binding), so the rest of the
 * code imports typed names from here.
 */
import { createRequire } from 'node:module';
import type * as Wrtc from '@roamhq/wrtc';

const require = createRequire(import.meta.url);
const wrtc = require('@roamhq/wrtc') as typeof Wrtc;

export const { RTCPeerConnection, MediaStream } = wrtc;
export const { RTCVideoSink, RTCVideoSource, i420ToRgba, rgbaToI420 } = wrtc.nonstandard;

/** Wait until a wrtc peer has gathered all its candidates (trickle-less SDP), or `timeoutMs` passed. */
export function iceGathered(pc: InstanceType<typeof RTCPeerConnection>, timeoutMs: number): Promise<void> {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}
