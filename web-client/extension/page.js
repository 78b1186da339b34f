// xportrait-cam virtual camera: runs in the meeting page's own JavaScript world (content script, world MAIN,
// document_start), before the page's scripts. It adds a camera named "xportrait-cam" to
// navigator.mediaDevices.enumerateDevices(), and getUserMedia() for that camera returns the avatar of your
// xportrait-cam room, received over WHEP in this page. Network calls go through bridge.js and the extension's
// service worker (background.js), so the page's CSP, CORS and mixed-content rules do not apply to them; the
// WebRTC media itself flows straight from the server to this page.
//
// The camera behaves like a real one toward the page's constraints (issue 21): its one mode is the picture the
// server makes for the room (`--output-frame`, e.g. 1280x720, else the avatar's square) at up to 30 fps. Ideal
// values (bare numbers, `ideal`) pick that mode; required ones (`exact`, `min`, `max`) it cannot meet fail with an
// OverconstrainedError naming the constraint, in getUserMedia and in applyConstraints; getSettings(),
// getCapabilities() and getConstraints() report the mode granted and the constraints applied.
//
// Lip sync: the microphone, when the page asks for it with the avatar, is delayed by the avatar's latency (WebAudio
// DelayNode into a MediaStreamAudioDestinationNode), so voice and lips arrive together. The delay follows the live
// figure: the server's for the room (publisher's camera -> avatar leaving the server's encoder) plus this page's own
// receive side (half the round trip, jitter buffer and decoding of the avatar's WHEP connection, one screen refresh
// of display), polled every second, smoothed,
// bounded (0-1000 ms) and moved gently (a ramp, at most 40 ms per second); or a fixed delay from the settings.
(() => {
  'use strict';
  if (window.__xportraitCam || !navigator.mediaDevices) return;
  const DEVICE_ID = 'xportrait-cam';
  const LABEL = 'xportrait-cam';
  const md = navigator.mediaDevices;
  const origEnumerate = md.enumerateDevices.bind(md);
  const origGetUserMedia = md.getUserMedia.bind(md);
  // captured now: a page that wraps RTCPeerConnection later does not see our connection
  const PeerConnection = window.RTCPeerConnection;
  const pending = new Map();
  let nextId = 1;
  let settings = { enabled: true, preferAvatar: false, audioDelay: 'auto' };
  /** The mode the camera offers, as the server last said (undefined before the first getUserMedia for it). */
  let lastMode;
  /** The avatar arrives at the camera's rate, at most this. */
  const MAX_FPS = 30;

  window.addEventListener('message', (e) => {
    if (e.source !== window || !e.data || e.data.source !== 'xportrait-cam-ext') return;
    if (e.data.type === 'settings') {
      settings = { ...settings, ...e.data.settings };
      return;
    }
    const p = pending.get(e.data.id);
    if (!p) return;
    pending.delete(e.data.id);
    if (e.data.error) p.reject(new DOMException(`xportrait-cam: ${e.data.error}`, 'NotReadableError'));
    else p.resolve(e.data.result);
  });

  /** Ask the extension (bridge.js -> background.js) to do a network call. */
  function ask(type, payload, timeoutMs = 15000) {
    return new Promise((resolve, reject) => {
      const id = nextId++;
      const timer = setTimeout(() => {
        pending.delete(id);
        reject(new DOMException('xportrait-cam: the extension did not answer (is it enabled?)', 'NotReadableError'));
      }, timeoutMs);
      pending.set(id, {
        resolve: (v) => (clearTimeout(timer), resolve(v)),
        reject: (err) => (clearTimeout(timer), reject(err)),
      });
      window.postMessage({ source: 'xportrait-cam-page', id, type, ...payload }, '*');
    });
  }

  function fakeDevice(groupId) {
    const proto = (window.InputDeviceInfo || window.MediaDeviceInfo).prototype;
    const d = Object.create(proto);
    const own = { deviceId: DEVICE_ID, groupId: groupId || DEVICE_ID, kind: 'videoinput', label: LABEL };
    for (const [k, v] of Object.entries(own)) Object.defineProperty(d, k, { value: v, enumerable: true });
    Object.defineProperty(d, 'toJSON', { value: () => ({ ...own }) });
    Object.defineProperty(d, 'getCapabilities', { value: () => capabilitiesOf(lastMode, own.groupId) });
    return d;
  }

  /** The camera's one mode, from the room's status (GET /api/rooms/<room>: frame). */
  function modeOf(room) {
    const f = (room && room.frame) || {};
    const width = f.width > 0 ? f.width : 512;
    const height = f.height > 0 ? f.height : 512;
    return { width, height, aspectRatio: round4(width / height), frameRate: MAX_FPS };
  }

  function round4(x) {
    return Math.round(x * 10000) / 10000;
  }

  function capabilitiesOf(mode, groupId) {
    const caps = { deviceId: DEVICE_ID, groupId: groupId || DEVICE_ID, resizeMode: ['none'], frameRate: { min: 1, max: MAX_FPS } };
    if (!mode) return { ...caps, width: { min: 64, max: 4096 }, height: { min: 64, max: 4096 } };
    return { ...caps, width: { min: mode.width, max: mode.width }, height: { min: mode.height, max: mode.height }, aspectRatio: { min: mode.aspectRatio, max: mode.aspectRatio } };
  }

  /**
   * The first required constraint (exact/min/max of width, height, aspectRatio, frameRate) the mode cannot meet, or
   * null. Ideal values and the optional `advanced` sets never fail (as the spec says: they only steer the choice).
   * frameRate: the avatar comes as fast as the engine makes it, up to MAX_FPS; a min or exact above that fails, a
   * max, exact or ideal below it is granted by passing fewer frames (pacedTrack).
   */
  function unmetConstraint(c, mode) {
    if (!c || typeof c !== 'object') return null;
    for (const k of ['width', 'height', 'aspectRatio', 'frameRate']) {
      const v = c[k];
      if (v === undefined || v === null || typeof v !== 'object') continue;
      const have = mode[k];
      const tol = k === 'aspectRatio' ? 0.005 * have : k === 'frameRate' ? 0.5 : 0;
      if (k === 'frameRate') {
        if (typeof v.min === 'number' && v.min > have + tol) return k;
        if (typeof v.exact === 'number' && v.exact > have + tol) return k;
        continue;
      }
      if (typeof v.exact === 'number' && Math.abs(v.exact - have) > tol) return k;
      if (typeof v.min === 'number' && have < v.min - tol) return k;
      if (typeof v.max === 'number' && have > v.max + tol) return k;
    }
    return null;
  }

  function overconstrained(constraint, mode) {
    const msg = `xportrait-cam: the room's picture is ${mode.width}x${mode.height} at up to ${mode.frameRate} fps; it cannot meet the required "${constraint}" (the server's --output-frame sets the picture)`;
    if (typeof window.OverconstrainedError === 'function') {
      try {
        return new window.OverconstrainedError(constraint, msg);
      } catch {
        /* an older browser without the constructor */
      }
    }
    const e = new DOMException(msg, 'OverconstrainedError');
    Object.defineProperty(e, 'constraint', { value: constraint });
    return e;
  }

  /** Ask the server (through the extension) for the room's status: its picture's size and its latency. */
  async function roomInfo() {
    const info = await ask('room-info', {});
    lastMode = modeOf(info.room);
    return info;
  }

  md.enumerateDevices = async function enumerateDevices() {
    const devices = await origEnumerate();
    if (!settings.enabled) return devices;
    return [...devices, fakeDevice()];
  };

  /** Does this `video` constraint ask for our camera (or for any camera while preferAvatar is on)? */
  function wantsAvatar(video) {
    if (!settings.enabled || !video) return false;
    if (video === true) return settings.preferAvatar;
    const ids = [];
    const collect = (c) => {
      if (!c) return;
      const d = c.deviceId;
      if (typeof d === 'string') ids.push(d);
      else if (Array.isArray(d)) ids.push(...d);
      else if (d && typeof d === 'object') {
        for (const k of ['exact', 'ideal']) {
          const v = d[k];
          if (typeof v === 'string') ids.push(v);
          else if (Array.isArray(v)) ids.push(...v);
        }
      }
    };
    collect(video);
    for (const adv of video.advanced || []) collect(adv);
    if (ids.length === 0) return settings.preferAvatar;
    return ids.includes(DEVICE_ID);
  }

  /**
   * The frame rate a constraint asks for, up to MAX_FPS: its max, exact or ideal (a number is an ideal), the lowest of
   * them; MAX_FPS when it names none. A real camera picks the mode nearest an ideal rate; this one has every rate up
   * to MAX_FPS, so it takes the ideal as asked.
   */
  function frameRateOf(c) {
    const f = c && typeof c === 'object' ? c.frameRate : undefined;
    const asked = typeof f === 'number' ? [f] : f && typeof f === 'object' ? [f.max, f.exact, f.ideal].filter((v) => typeof v === 'number') : [];
    return Math.max(1, Math.min(MAX_FPS, ...asked.filter((v) => v > 0)));
  }

  /**
   * The received track, paced to `pace.fps` (changed by applyConstraints): the frames pass through a
   * MediaStreamTrackProcessor into a MediaStreamTrackGenerator (Chromium's insertable streams), one kept each time
   * the next due time is reached and the rest closed unshown, so a page that asks for 15 fps gets 15, not the room's
   * rate. Due times advance by whole intervals, so the rate kept is the one asked for whenever the room sends more.
   * Without insertable streams (another browser) the track is returned as it is and reports its own rate.
   */
  function pacedTrack(track, pace) {
    if (typeof window.MediaStreamTrackProcessor !== 'function' || typeof window.MediaStreamTrackGenerator !== 'function') return track;
    const processor = new window.MediaStreamTrackProcessor({ track });
    const generator = new window.MediaStreamTrackGenerator({ kind: 'video' });
    let next = -Infinity;
    const pacer = new TransformStream({
      transform(frame, controller) {
        const t = frame.timestamp; // microseconds
        if (pace.fps >= MAX_FPS) {
          next = -Infinity;
          return controller.enqueue(frame);
        }
        if (t < next) return frame.close();
        const interval = 1e6 / pace.fps;
        next = next === -Infinity || next + interval <= t ? t + interval : next + interval;
        controller.enqueue(frame);
      },
    });
    processor.readable.pipeThrough(pacer).pipeTo(generator.writable).catch(() => {});
    pace.source = track;
    return generator;
  }

  async function avatarTrack(mode, constraints) {
    const pc = new PeerConnection();
    pc.addTransceiver('video', { direction: 'recvonly' });
    const gotTrack = new Promise((resolve) => (pc.ontrack = (e) => resolve(e.track)));
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === 'complete') return resolve();
      const t = setTimeout(resolve, 2000);
      pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && (clearTimeout(t), resolve()));
    });
    let answer;
    try {
      answer = await ask('whep-offer', { sdp: pc.localDescription.sdp });
    } catch (err) {
      pc.close();
      throw err;
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    const track = await gotTrack;
    const shared = { pc, resource: answer.resource, live: 0, pace: { fps: frameRateOf(constraints) } };
    return asCamera(pacedTrack(track, shared.pace), shared, mode, constraints);
  }

  /**
   * Make a received track look like a camera to the page: its label, settings, capabilities and constraints name
   * the device and its mode; applyConstraints checks against the mode; stop() of the last of it and its clones
   * ends the WHEP session.
   */
  function asCamera(track, shared, mode, constraints) {
    Object.defineProperty(track, 'label', { value: LABEL, configurable: true });
    Object.defineProperty(track, '__xportraitShared', { value: shared });
    let applied = constraints && typeof constraints === 'object' ? { ...constraints } : {};
    const origSettings = track.getSettings.bind(track);
    track.getSettings = () => ({
      ...origSettings(),
      deviceId: DEVICE_ID,
      groupId: DEVICE_ID,
      width: mode.width,
      height: mode.height,
      aspectRatio: mode.aspectRatio,
      frameRate: shared.pace.fps,
      resizeMode: 'none',
    });
    track.getCapabilities = () => capabilitiesOf(mode, DEVICE_ID);
    track.getConstraints = () => ({ ...applied });
    track.applyConstraints = async (c = {}) => {
      const bad = unmetConstraint(c, mode);
      if (bad) throw overconstrained(bad, mode);
      applied = { ...c };
      shared.pace.fps = frameRateOf(c);
    };
    const origClone = track.clone.bind(track);
    track.clone = () => asCamera(origClone(), shared, mode, applied);
    const origStop = track.stop.bind(track);
    let stopped = false;
    shared.live++;
    track.stop = () => {
      origStop();
      if (stopped) return;
      stopped = true;
      if (--shared.live > 0) return;
      shared.pace.source?.stop();
      shared.pc.close();
      if (shared.resource) ask('whep-delete', { resource: shared.resource }).catch(() => {});
    };
    return track;
  }

  /** One screen refresh at 60 Hz: from decoded to shown. */
  const DISPLAY_MS = 1000 / 60;

  const LIP_SYNC = {
    /** Upper bound of the delay (a figure above it is a fault, not a latency to follow). */
    maxMs: 1000,
    pollMs: 1000,
    /** Weight of each new measurement in the smoothed figure. */
    alpha: 0.3,
    /** Largest change of the delay per poll. */
    stepMs: 40,
    /** Changes smaller than this are left alone (no constant wobble). */
    deadBandMs: 4,
  };

  /** The fixed delay from the settings ("auto": none, follow the server), in ms within bounds. */
  function fixedDelayMs() {
    const v = settings.audioDelay;
    if (v === undefined || v === null || v === '' || v === 'auto') return undefined;
    const n = Number(v);
    return Number.isFinite(n) ? Math.max(0, Math.min(LIP_SYNC.maxMs, n)) : undefined;
  }

  /**
   * This page's receive side of the avatar, ms: half the round trip, plus per frame emitted since the previous call
   * (a window, not the average since the start, which keeps the connection's first seconds) the processing delay
   * (first packet in -> decoded: jitter buffer, assembly, decoding; the jitter-buffer delay plus the decode time where
   * the browser lacks totalProcessingDelay), plus one screen refresh for display. `prev` carries the counters.
   */
  async function receiveSideMs(pc, prev) {
    let rtt = 0;
    let perFrame;
    const stats = await pc.getStats();
    stats.forEach((r) => {
      if (r.type === 'candidate-pair' && r.nominated && typeof r.currentRoundTripTime === 'number') rtt = r.currentRoundTripTime * 1000;
      if (r.type === 'inbound-rtp' && r.kind === 'video') {
        const processing = typeof r.totalProcessingDelay === 'number' ? r.totalProcessingDelay : (r.jitterBufferDelay || 0) + (r.totalDecodeTime || 0);
        const count = typeof r.totalProcessingDelay === 'number' ? r.framesDecoded : r.jitterBufferEmittedCount;
        const frames = count - (prev.frames || 0);
        if (frames > 0) perFrame = ((processing - (prev.processing || 0)) / frames) * 1000;
        prev.frames = count;
        prev.processing = processing;
      }
    });
    if (perFrame !== undefined) prev.perFrameMs = perFrame;
    // a decoded frame is shown at the next screen refresh (not a frame interval of the stream: at a low avatar
    // frame rate that would add 100 ms and more that the picture never waits)
    return rtt / 2 + (prev.perFrameMs || 0) + DISPLAY_MS;
  }

  /** Lip-sync state of the live delayed microphones (read by tests and for support: window.__xportraitCam.lipSync()). */
  const lipSyncs = new Set();

  /**
   * The microphone track delayed by the avatar's latency. `shared` is the avatar's WHEP connection (for its receive
   * side); `roomLatency` the server's first figure. Falls back to the microphone as it is, with a console warning,
   * when the page may not run audio (an AudioContext that stays suspended would send silence).
   */
  async function delayedMicrophone(mic, shared, roomLatency) {
    const ctx = new AudioContext({ latencyHint: 'interactive' });
    if (ctx.state !== 'running') await Promise.race([ctx.resume(), new Promise((r) => setTimeout(r, 500))]);
    if (ctx.state !== 'running') {
      console.warn('xportrait-cam: audio cannot run on this page yet (no user gesture): the microphone is not delayed for lip sync');
      ctx.close();
      return mic;
    }
    const source = ctx.createMediaStreamSource(new MediaStream([mic]));
    const delay = ctx.createDelay(LIP_SYNC.maxMs / 1000 + 0.05);
    const dest = ctx.createMediaStreamDestination();
    source.connect(delay).connect(dest);
    const track = dest.stream.getAudioTracks()[0];
    const state = { mode: 'auto', targetMs: 0, appliedMs: 0, serverMs: 0, receiveMs: 0, updates: 0 };
    const clamp = (ms) => Math.max(0, Math.min(LIP_SYNC.maxMs, ms));
    const set = (ms, ramp) => {
      state.appliedMs = Math.round(ms);
      // a ramp, never a jump: an abrupt change of a delay line clicks and drops or repeats speech
      if (ramp) delay.delayTime.setTargetAtTime(ms / 1000, ctx.currentTime, 0.3);
      else delay.delayTime.setValueAtTime(ms / 1000, ctx.currentTime);
    };
    let smoothed;
    const jitterWindow = {};
    const update = async (first) => {
      const fixed = fixedDelayMs();
      if (fixed !== undefined) {
        state.mode = 'fixed';
        state.targetMs = fixed;
        if (Math.abs(fixed - state.appliedMs) >= 1) set(fixed, !first);
        return;
      }
      state.mode = 'auto';
      let serverMs = state.serverMs;
      if (first) serverMs = roomLatency ? roomLatency.totalMs : 0;
      else {
        const info = await ask('room-info', {}).catch(() => undefined);
        if (info && info.room && info.room.latency) serverMs = info.room.latency.totalMs;
      }
      const receiveMs = shared.pc.connectionState === 'closed' ? state.receiveMs : await receiveSideMs(shared.pc, jitterWindow).catch(() => state.receiveMs);
      state.serverMs = Math.round(serverMs);
      state.receiveMs = Math.round(receiveMs);
      const measured = clamp(serverMs + receiveMs);
      smoothed = smoothed === undefined ? measured : smoothed + LIP_SYNC.alpha * (measured - smoothed);
      state.targetMs = Math.round(smoothed);
      const diff = smoothed - state.appliedMs;
      if (first) set(smoothed, false);
      else if (Math.abs(diff) >= LIP_SYNC.deadBandMs) set(clamp(state.appliedMs + Math.max(-LIP_SYNC.stepMs, Math.min(LIP_SYNC.stepMs, diff))), true);
      state.updates++;
    };
    await update(true);
    const timer = setInterval(() => void update(false).catch(() => {}), LIP_SYNC.pollMs);
    lipSyncs.add(state);
    // Look like the microphone to the page.
    Object.defineProperty(track, 'label', { value: mic.label, configurable: true });
    const micSettings = mic.getSettings.bind(mic);
    track.getSettings = () => micSettings();
    track.getCapabilities = () => (mic.getCapabilities ? mic.getCapabilities() : {});
    track.getConstraints = () => mic.getConstraints();
    track.applyConstraints = (c) => mic.applyConstraints(c);
    Object.defineProperty(track, 'enabled', {
      configurable: true,
      get: () => mic.enabled,
      set: (v) => {
        mic.enabled = v;
      },
    });
    const origStop = track.stop.bind(track);
    track.stop = () => {
      origStop();
      mic.stop();
      clearInterval(timer);
      lipSyncs.delete(state);
      ctx.close();
    };
    mic.addEventListener('ended', () => track.stop());
    return track;
  }

  md.getUserMedia = async function getUserMedia(constraints) {
    if (!constraints || !wantsAvatar(constraints.video)) return origGetUserMedia(constraints);
    const info = await roomInfo();
    const mode = modeOf(info.room);
    const bad = unmetConstraint(constraints.video, mode);
    if (bad) throw overconstrained(bad, mode);
    const video = await avatarTrack(mode, constraints.video);
    const tracks = [video];
    if (constraints.audio) {
      try {
        const mic = (await origGetUserMedia({ audio: constraints.audio })).getAudioTracks()[0];
        // lip sync is worth having, never worth losing the microphone over
        tracks.push(
          await delayedMicrophone(mic, video.__xportraitShared, info.room && info.room.latency).catch((err) => {
            console.warn(`xportrait-cam: the microphone is not delayed for lip sync (${err && err.message})`);
            return mic;
          }),
        );
      } catch (err) {
        video.stop();
        throw err;
      }
    }
    return new MediaStream(tracks);
  };

  window.__xportraitCam = {
    deviceId: DEVICE_ID,
    version: '0.2.0',
    /** The delayed microphones' state: mode (auto/fixed), targetMs, appliedMs, serverMs, receiveMs. */
    lipSync: () => [...lipSyncs].map((s) => ({ ...s })),
  };
})();
