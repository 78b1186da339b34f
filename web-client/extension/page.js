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
  let settings = { enabled: true, preferAvatar: false };
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
   * frameRate: the avatar comes as fast as the engine makes it, up to MAX_FPS (the settings say MAX_FPS); a min or
   * exact above that fails, a max below it is accepted (the picture is not decimated: meeting pages ask for max
   * 24-30 as a ceiling, and the avatar's own rate is usually below it).
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
    const shared = { pc, resource: answer.resource, live: 0 };
    return asCamera(track, shared, mode, constraints);
  }

  /**
   * Make a received track look like a camera to the page: its label, settings, capabilities and constraints name
   * the device and its mode; applyConstraints checks against the mode; stop() of the last of it and its clones
   * ends the WHEP session.
   */
  function asCamera(track, shared, mode, constraints) {
    Object.defineProperty(track, 'label', { value: LABEL, configurable: true });
    let applied = constraints && typeof constraints === 'object' ? { ...constraints } : {};
    const origSettings = track.getSettings.bind(track);
    track.getSettings = () => ({
      ...origSettings(),
      deviceId: DEVICE_ID,
      groupId: DEVICE_ID,
      width: mode.width,
      height: mode.height,
      aspectRatio: mode.aspectRatio,
      frameRate: mode.frameRate,
      resizeMode: 'none',
    });
    track.getCapabilities = () => capabilitiesOf(mode, DEVICE_ID);
    track.getConstraints = () => ({ ...applied });
    track.applyConstraints = async (c = {}) => {
      const bad = unmetConstraint(c, mode);
      if (bad) throw overconstrained(bad, mode);
      applied = { ...c };
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
      shared.pc.close();
      if (shared.resource) ask('whep-delete', { resource: shared.resource }).catch(() => {});
    };
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
        tracks.push(...(await origGetUserMedia({ audio: constraints.audio })).getAudioTracks());
      } catch (err) {
        video.stop();
        throw err;
      }
    }
    return new MediaStream(tracks);
  };

  window.__xportraitCam = { deviceId: DEVICE_ID, version: '0.1.0' };
})();
