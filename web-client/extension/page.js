// xportrait-cam virtual camera: runs in the meeting page's own JavaScript world (content script, world MAIN,
// document_start), before the page's scripts. It adds a camera named "xportrait-cam" to
// navigator.mediaDevices.enumerateDevices(), and getUserMedia() for that camera returns the avatar of your
// xportrait-cam room, received over WHEP in this page. Network calls go through bridge.js and the extension's
// service worker (background.js), so the page's CSP, CORS and mixed-content rules do not apply to them; the
// WebRTC media itself flows straight from the server to this page.
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
    Object.defineProperty(d, 'getCapabilities', {
      value: () => ({ deviceId: DEVICE_ID, groupId: own.groupId, width: { min: 64, max: 2048 }, height: { min: 64, max: 2048 }, frameRate: { min: 1, max: 60 } }),
    });
    return d;
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

  async function avatarTrack() {
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
    // Look like a camera to the page: its label and settings name the device.
    Object.defineProperty(track, 'label', { value: LABEL, configurable: true });
    const origSettings = track.getSettings.bind(track);
    track.getSettings = () => ({ ...origSettings(), deviceId: DEVICE_ID, groupId: DEVICE_ID });
    const origStop = track.stop.bind(track);
    let stopped = false;
    track.stop = () => {
      origStop();
      if (stopped) return;
      stopped = true;
      pc.close();
      if (answer.resource) ask('whep-delete', { resource: answer.resource }).catch(() => {});
    };
    return track;
  }

  md.getUserMedia = async function getUserMedia(constraints) {
    if (!constraints || !wantsAvatar(constraints.video)) return origGetUserMedia(constraints);
    const video = await avatarTrack();
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
