// xportrait-cam virtual camera: the settings page (also the toolbar popup).
'use strict';
const DEFAULTS = { server: 'http://localhost:8080', room: 'main', token: '', enabled: true, preferAvatar: false, audioDelay: 'auto' };
const $ = (id) => document.getElementById(id);
const result = $('result');

function show(text, kind) {
  result.textContent = text;
  result.dataset.kind = kind;
}

chrome.storage.sync.get(DEFAULTS, (s) => {
  $('server').value = s.server;
  $('room').value = s.room;
  $('token').value = s.token;
  $('enabled').checked = s.enabled;
  $('preferAvatar').checked = s.preferAvatar;
  $('audioDelay').value = s.audioDelay;
});

function read() {
  return {
    server: $('server').value.trim().replace(/\/+$/, '') || DEFAULTS.server,
    room: $('room').value.trim() || DEFAULTS.room,
    token: $('token').value.trim(),
    enabled: $('enabled').checked,
    preferAvatar: $('preferAvatar').checked,
    audioDelay: $('audioDelay').value.trim().toLowerCase() || 'auto',
  };
}

$('save').addEventListener('click', () => {
  const s = read();
  if (!/^https?:\/\//.test(s.server)) return show('The server must start with http:// or https://', 'error');
  if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/.test(s.room)) return show('The room is 1-64 letters, digits, - or _', 'error');
  if (s.audioDelay !== 'auto' && !(/^\d{1,4}$/.test(s.audioDelay) && Number(s.audioDelay) <= 1000)) return show('The microphone delay is "auto" or 0-1000 (milliseconds)', 'error');
  chrome.storage.sync.set(s, () => show('Saved. Reload the meeting page to use the new settings.', 'ok'));
});

$('test').addEventListener('click', async () => {
  const s = read();
  show('Testing…', '');
  try {
    const res = await fetch(`${s.server}/api/rooms/${encodeURIComponent(s.room)}`, { headers: s.token ? { authorization: `Bearer ${s.token}` } : {} });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) return show(`The server refused: ${(body.error && body.error.message) || `HTTP ${res.status}`}`, 'error');
    const picture = body.frame && body.frame.width ? ` Picture ${body.frame.width}×${body.frame.height}.` : '';
    const latency = body.latency ? ` Avatar latency at the server ${body.latency.totalMs} ms.` : '';
    show(body.publishing ? `Room “${s.room}” is live (${body.viewers} viewer${body.viewers === 1 ? '' : 's'}).${picture}${latency}` : `Connected, but nobody publishes to room “${s.room}” yet: start your avatar in the web client.`, 'ok');
  } catch (err) {
    show(`Cannot reach ${s.server}: is xportrait-cam serve running?`, 'error');
  }
});
