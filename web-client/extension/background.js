// xportrait-cam virtual camera: the service worker. It holds the settings (server, room, token in
// chrome.storage.sync) and makes the WHEP requests for the pages, from the extension's origin, so meeting sites'
// CSP and mixed-content rules do not block them. The server answers CORS for any origin.
'use strict';

const DEFAULTS = { server: 'http://localhost:8080', room: 'main', token: '', enabled: true, preferAvatar: false, audioDelay: 'auto' };

function settings() {
  return new Promise((resolve) => chrome.storage.sync.get(DEFAULTS, resolve));
}

async function errorText(res) {
  const text = await res.text().catch(() => '');
  try {
    const j = JSON.parse(text);
    if (j && j.error && j.error.message) return `${j.error.message} (HTTP ${res.status})`;
  } catch {
    /* not JSON */
  }
  return `HTTP ${res.status}${text ? `: ${text.slice(0, 200)}` : ''}`;
}

async function whepOffer(sdp) {
  const s = await settings();
  const base = String(s.server).replace(/\/+$/, '');
  const endpoint = `${base}/whep/${encodeURIComponent(s.room)}`;
  const headers = { 'content-type': 'application/sdp' };
  if (s.token) headers.authorization = `Bearer ${s.token}`;
  let res;
  try {
    res = await fetch(endpoint, { method: 'POST', headers, body: sdp });
  } catch (err) {
    throw new Error(`cannot reach ${base} (is xportrait-cam serve running? check the extension's settings)`);
  }
  if (res.status !== 201) throw new Error(`the server refused the camera: ${await errorText(res)}`);
  const answer = await res.text();
  const location = res.headers.get('location');
  return { sdp: answer, resource: location ? new URL(location, endpoint).toString() : undefined };
}

async function whepDelete(resource) {
  const s = await settings();
  const headers = {};
  if (s.token) headers.authorization = `Bearer ${s.token}`;
  await fetch(resource, { method: 'DELETE', headers });
  return {};
}

/** The room's status (GET /api/rooms/<room>): the picture's size and rate, and the publisher's measured latency. */
async function roomInfo() {
  const s = await settings();
  const base = String(s.server).replace(/\/+$/, '');
  const headers = {};
  if (s.token) headers.authorization = `Bearer ${s.token}`;
  let res;
  try {
    res = await fetch(`${base}/api/rooms/${encodeURIComponent(s.room)}`, { headers });
  } catch (err) {
    throw new Error(`cannot reach ${base} (is xportrait-cam serve running? check the extension's settings)`);
  }
  if (!res.ok) throw new Error(`the server refused the room's status: ${await errorText(res)}`);
  const room = await res.json();
  return { room };
}

const REQUESTS = { 'whep-offer': (msg) => whepOffer(msg.sdp), 'whep-delete': (msg) => whepDelete(msg.resource), 'room-info': () => roomInfo() };

chrome.runtime.onMessage.addListener((msg, _sender, reply) => {
  const handler = REQUESTS[msg.type];
  const work = handler ? handler(msg) : Promise.reject(new Error(`unknown request ${msg.type}`));
  work.then(
    (result) => reply({ result }),
    (err) => reply({ error: err.message }),
  );
  return true; // answers asynchronously
});
