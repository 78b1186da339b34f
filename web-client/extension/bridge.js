// xportrait-cam virtual camera: the content script in the extension's isolated world. It relays page.js's
// requests (window.postMessage) to the service worker (background.js) and the answers back, and tells page.js
// the current settings (enabled, use as default camera).
(() => {
  'use strict';
  const post = (msg) => window.postMessage({ source: 'xportrait-cam-ext', ...msg }, '*');

  function sendSettings() {
    chrome.storage.sync.get({ enabled: true, preferAvatar: false, audioDelay: 'auto' }, (s) => post({ type: 'settings', settings: s }));
  }
  sendSettings();
  chrome.storage.onChanged.addListener(sendSettings);

  window.addEventListener('message', (e) => {
    if (e.source !== window || !e.data || e.data.source !== 'xportrait-cam-page') return;
    const { id, type, sdp, resource } = e.data;
    if (type !== 'whep-offer' && type !== 'whep-delete' && type !== 'room-info') return;
    chrome.runtime.sendMessage({ type, sdp, resource }, (reply) => {
      if (chrome.runtime.lastError) return post({ id, error: chrome.runtime.lastError.message });
      post({ id, ...(reply || { error: 'no answer from the extension' }) });
    });
  });
})();
