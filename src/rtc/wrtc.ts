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
