/**
 * `bench.html`: one self-contained page per bench run — the figures as tables and five plots (glass-to-glass
 * latency over time, its histogram, per-stage stacked bars per second, CPU and RSS of each process over time),
 * drawn by uPlot (MIT, inlined from node_modules with its CSS). No network, no other file.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { STAGES, type Stage } from './glass.ts';
import type { BenchReport, Rounded } from './report.ts';
import { histogram } from './stats.ts';

const require = createRequire(import.meta.url);

export function uplotAssets(): { js: string; css: string } {
  const dir = join(dirname(require.resolve('uplot/package.json')), 'dist');
  return { js: readFileSync(join(dir, 'uPlot.iife.min.js'), 'utf8'), css: readFileSync(join(dir, 'uPlot.min.css'), 'utf8') };
}

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
const json = (v: unknown) => JSON.stringify(v, (_k, x) => (typeof x === 'number' && !Number.isFinite(x) ? null : x)).replace(/</g, '\\u003c');
const f = (v: number | null | undefined, d = 1, unit = '') => (v === null || v === undefined || !Number.isFinite(v) ? '–' : `${v.toFixed(d)}${unit}`);

export const STAGE_COLOURS: Record<Stage, string> = {
  uplink: '#4f7cf7',
  queue: '#8a8f98',
  track: '#b07cd8',
  engine: '#e0a43a',
  output: '#c8b560',
  downlink: '#3fb37f',
  display: '#e25a5a',
};

/** Per-second means of each stage (for the stacked bars), from the per-frame series. */
function stagesPerSecond(r: BenchReport): { t: number[]; stages: Record<Stage, number[]> } {
  const { t, stages } = r.series.frames;
  const secs = Math.ceil(Math.max(0, ...t));
  const out = { t: [] as number[], stages: Object.fromEntries(STAGES.map((s) => [s, [] as number[]])) as Record<Stage, number[]> };
  for (let s = 0; s < secs; s++) {
    const idx = t.map((x, i) => (x >= s && x < s + 1 ? i : -1)).filter((i) => i >= 0);
    if (!idx.length) continue;
    out.t.push(s + 0.5);
    for (const st of STAGES) {
      const v = idx.map((i) => stages[st][i]).filter((x): x is number => x !== null);
      out.stages[st].push(v.length ? v.reduce((a, b) => a + b, 0) / v.length : 0);
    }
  }
  return out;
}

function summaryRow(name: string, s: Rounded | undefined, d = 1): string {
  if (!s) return '';
  return `<tr><td>${esc(name)}</td><td>${f(s.p50, d)}</td><td>${f(s.p95, d)}</td><td>${f(s.p99, d)}</td><td>${f(s.max, d)}</td><td>${f(s.mean, d)}</td><td>${s.n}</td></tr>`;
}

function viewersTable(r: BenchReport): string {
  const v = r.viewers;
  if (!v) return '';
  const rows = v.perViewer
    .map(
      (x, i) =>
        `<tr><td>viewer ${i + 1}</td><td>${f(x.glass.p50)}</td><td>${f(x.glass.p95)}</td><td>${f(x.glass.p99)}</td><td>${f(x.fpsDelivered)}</td><td>${x.notShown}</td><td>${f(x.downlink?.p50 ?? null)}</td><td>${f(x.display?.p50 ?? null)}</td></tr>`,
    )
    .join('');
  return `<h2>Viewers (${v.count}, watching the room over WHEP)</h2>
<table><thead><tr><th></th><th>glass p50 ms</th><th>p95</th><th>p99</th><th>fps</th><th>sent, not shown</th><th>downlink p50</th><th>display p50</th></tr></thead><tbody>
<tr><td>all viewers</td><td>${f(v.glass.p50)}</td><td>${f(v.glass.p95)}</td><td>${f(v.glass.p99)}</td><td></td><td></td><td></td><td></td></tr>${rows}</tbody></table>`;
}

function engineOwnTable(r: BenchReport): string {
  const e = r.engineOwn;
  if (!e || !Object.keys(e.stages ?? {}).length) return '';
  const rows = Object.entries(e.stages)
    .map(([k, s]) => `<tr><td>${esc(k)}</td><td>${f(s.p50Ms, 2)}</td><td>${f(s.p95Ms, 2)}</td><td>${f(s.maxMs, 2)}</td><td>${f(s.meanMs, 2)}</td><td>${s.count}</td></tr>`)
    .join('');
  const extra = Object.entries(e.extra ?? {})
    .map(([k, v]) => `${esc(k)} ${esc(String(v))}`)
    .join(' · ');
  return `<h2>The engine's own timers (ms, its recent frames)</h2>
<table><thead><tr><th>stage</th><th>p50</th><th>p95</th><th>max</th><th>mean</th><th>frames</th></tr></thead><tbody>${rows}</tbody></table>${extra ? `<p class="meta">${extra}</p>` : ''}`;
}

export function renderBenchHtml(r: BenchReport): string {
  const { js, css } = uplotAssets();
  const o = r.options;
  const present = STAGES.filter((s) => r.stages[s]);
  const hist = histogram(r.series.frames.glass);
  const perSecond = stagesPerSecond(r);
  const data = {
    frames: { t: r.series.frames.t, glass: r.series.frames.glass },
    hist: { x: hist.edges.map((e) => e + hist.binWidth / 2), y: hist.counts, w: hist.binWidth },
    stacked: {
      t: perSecond.t,
      names: present,
      colours: present.map((s) => STAGE_COLOURS[s]),
      values: present.map((s) => perSecond.stages[s]),
    },
    resources: r.series.resources,
  };
  const frames = r.frames;
  const proc = Object.entries(r.cpu.processes)
    .map(([k, p]) => `<tr><td>${esc(k)}</td><td>${f(p.cpuMean)}</td><td>${f(p.cpuP95)}</td><td>${f(p.rssStartMiB, 0)}</td><td>${f(p.rssEndMiB, 0)}</td><td>${f(p.rssMaxMiB, 0)}</td><td>${p.processes}</td></tr>`)
    .join('');
  const threads = Object.entries(r.cpu.serverThreads)
    .map(([, t]) => `<tr><td>${esc(t.label)}</td><td>${f(t.cpuMean)}</td></tr>`)
    .join('');
  const rthreads = Object.entries(r.cpu.rendererThreads)
    .map(([k, t]) => `<tr><td>${esc(t.label ?? k)}</td><td>${f(t.cpuMean)}</td></tr>`)
    .join('');
  const busy = Object.entries(r.cpu.serverStageBusy)
    .map(([k, v]) => `<tr><td>${esc(k)}</td><td>${f(v)}</td></tr>`)
    .join('');
  const wb = r.webrtc.browser;
  const ws = r.webrtc.server;
  const soak = r.soak
    ? `<h2>Soak drift</h2>
<p class="verdict ${r.soak.flat.latency && r.soak.flat.serverRss ? 'ok' : 'bad'}">${r.soak.flat.latency && r.soak.flat.serverRss ? 'flat' : 'NOT flat'}</p>
<table><tbody>
<tr><td>glass-to-glass slope</td><td>${f(r.soak.latencySlopeMsPerMin, 3)} ms/min (${r.soak.flat.latency ? 'flat' : 'drifting'})</td></tr>
<tr><td>server RSS slope</td><td>${f(r.soak.serverRssSlopeMiBPerMin, 3)} MiB/min (${r.soak.flat.serverRss ? 'flat' : 'growing'})</td></tr>
<tr><td>browser RSS slope</td><td>${f(r.soak.browserRssSlopeMiBPerMin, 3)} MiB/min</td></tr>
<tr><td>criteria</td><td>${esc(r.soak.criteria)}</td></tr>
</tbody></table>
<table><thead><tr><th>minute</th><th>p50 ms</th><th>p95 ms</th><th>fps</th><th>server RSS MiB</th><th>server CPU %</th><th>machine load</th></tr></thead><tbody>
${r.soak.perMinute.map((m) => `<tr><td>${m.minute}</td><td>${f(m.p50)}</td><td>${f(m.p95)}</td><td>${f(m.fps)}</td><td>${f(m.serverRssMiB, 0)}</td><td>${f(m.serverCpu)}</td><td>${f(m.load, 2)}</td></tr>`).join('')}
</tbody></table>`
    : '';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>xportrait-cam bench: ${esc(o.engine)} ${o.size}² — p50 ${f(r.glass.p50, 0)} ms</title>
<style>${css}
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1150px}
h1{font-size:20px} h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;margin:6px 0} td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left;font-variant-numeric:tabular-nums}
th{font-weight:600;color:#555}
.meta{color:#555} .warn{color:#9a5b00}
.big{display:flex;gap:24px;margin:12px 0} .big div{background:#f3f5f8;border-radius:8px;padding:8px 14px} .big b{display:block;font-size:24px}
.plots{display:grid;grid-template-columns:1fr 1fr;gap:14px} .plot{min-height:240px}
.verdict{display:inline-block;padding:3px 10px;border-radius:4px;color:#fff} .verdict.ok{background:#0a7a2f} .verdict.bad{background:#b00020}
</style></head><body>
<h1>xportrait-cam bench — ${esc(o.engine)} at ${o.size}×${o.size}, ${o.fps} fps${o.lossPercent !== undefined ? `, ${o.lossPercent}% UDP loss` : ''}</h1>
<p class="meta">${esc(r.createdAt)} · ${esc(r.machine.cpuModel)} ×${r.machine.cpus}, ${r.machine.memGiB} GiB · load average ${r.machine.loadAvgStart.map((x) => x.toFixed(2)).join(' / ')} at the start, ${r.machine.loadAvgEnd.map((x) => x.toFixed(2)).join(' / ')} at the end ·
node ${esc(r.machine.node)} · ${esc(r.machine.chromium)} · xportrait-cam ${esc(r.machine.packageVersion)}${r.machine.gitCommit ? ` (${esc(r.machine.gitCommit)})` : ''}${Object.entries(r.machine.libraries ?? {}).map(([k, v]) => ` · ${esc(k)} ${esc(v)}`).join('')}<br>
camera: ${esc(o.video)} · portrait: ${esc(o.portrait)} · frame ids: ${esc(r.method.idMode)} (loop of ${r.method.idPeriod}) ·
warm-up ${f(r.method.warmupSeconds, 1)} s excluded (first avatar frame ${f(r.method.firstAvatarFrameMs, 0)} ms after the page opened), measured ${f(r.method.measuredSeconds, 1)} s ·
clock offset server−browser ${f(r.method.clockOffsetMs, 2)} ± ${f(r.method.clockUncertaintyMs, 2)} ms</p>
${r.warnings.map((w) => `<p class="warn">⚠ ${esc(w)}</p>`).join('\n')}
<div class="big">
<div>glass-to-glass p50<b>${f(r.glass.p50, 0)} ms</b></div><div>p95<b>${f(r.glass.p95, 0)} ms</b></div><div>p99<b>${f(r.glass.p99, 0)} ms</b></div><div>max<b>${f(r.glass.max, 0)} ms</b></div>
<div>avatar fps<b>${f(r.fps.delivered)}</b></div>
</div>
<h2>Plots</h2>
<div class="plots">
<div class="plot" id="plot-latency" data-plot="latency"></div>
<div class="plot" id="plot-histogram" data-plot="histogram"></div>
<div class="plot" id="plot-stages" data-plot="stages"></div>
<div class="plot" id="plot-cpu" data-plot="cpu"></div>
<div class="plot" id="plot-rss" data-plot="rss"></div>
</div>
<h2>Latency per stage (ms)</h2>
<table><thead><tr><th>stage</th><th>p50</th><th>p95</th><th>p99</th><th>max</th><th>mean</th><th>frames</th></tr></thead><tbody>
${summaryRow('glass-to-glass', r.glass)}
${present.map((s) => summaryRow(r.stageLabels[s] ?? s, r.stages[s])).join('\n')}
${Object.entries(r.engineStages).map(([k, s]) => summaryRow(`engine: ${k}`, s, 2)).join('\n')}
</tbody></table>
${engineOwnTable(r)}
<h2>Frames</h2>
<table><tbody>
<tr><td>frame rate: camera / avatar delivered / avatar presented</td><td>${f(r.fps.camera)} / ${f(r.fps.delivered)} / ${f(r.fps.presented)} fps</td></tr>
<tr><td>server in / out</td><td>${f(r.fps.serverIn)} / ${f(r.fps.serverOut)} fps</td></tr>
<tr><td>captured → received by the server → sent → shown</td><td>${frames.captured} → ${frames.receivedByServer} → ${frames.sentByServer} → ${frames.displayed}</td></tr>
<tr><td>dropped before the server (browser encoder, network)</td><td>${frames.droppedBeforeServer}</td></tr>
<tr><td>dropped at the server (mailbox: engine busy)</td><td>${frames.droppedAtServer}</td></tr>
<tr><td>dropped after the server (server encoder, network, browser decoder/renderer)</td><td>${frames.droppedAfterServer}</td></tr>
<tr><td>stale avatar frames (not newer than the one before)</td><td>${frames.stale}</td></tr>
<tr><td>capture times interpolated (preview skipped the frame)</td><td>${frames.capturesInterpolated}</td></tr>
${r.metrics ? `<tr><td>/metrics over the window: received / sent / dropped</td><td>${f(r.metrics.framesReceived, 0)} / ${f(r.metrics.framesSent, 0)} / ${f(r.metrics.framesDropped, 0)}</td></tr>` : ''}
</tbody></table>
${viewersTable(r)}
<h2>WebRTC codecs (means over the window)</h2>
<table><thead><tr><th></th><th>encode ms/frame</th><th>decode ms/frame</th><th>jitter buffer ms</th><th>send kbit/s</th><th>receive kbit/s</th><th>decoder drops</th></tr></thead><tbody>
<tr><td>browser (camera out, avatar in)</td><td>${f(wb.encodeMs, 2)}</td><td>${f(wb.decodeMs, 2)}</td><td>${f(wb.jitterBufferMs, 1)}</td><td>${f(wb.sendKbps, 0)}</td><td>${f(wb.recvKbps, 0)}</td><td>${f(wb.framesDropped, 0)}</td></tr>
<tr><td>server (avatar out, camera in)</td><td>${f(ws.encodeMs, 2)}</td><td>${f(ws.decodeMs, 2)}</td><td>${f(ws.jitterBufferMs, 1)}</td><td>${f(ws.sendKbps, 0)}</td><td>${f(ws.recvKbps, 0)}</td><td>${f(ws.framesDropped, 0)}</td></tr>
</tbody></table>
<p class="meta">Where the network legs go (means, ms; from the codec figures above, the rest by difference):</p>
<table><tbody>
${Object.entries(r.legs ?? {})
  .map(([leg, parts]) => `<tr><td>${esc(leg)} (mean ${f(r.stages[leg as Stage]?.mean)})</td><td>${Object.entries(parts).map(([k, v]) => `${esc(k)} ${f(v)}`).join(' · ')}</td></tr>`)
  .join('')}
</tbody></table>
<h2>CPU (% of one core) and memory per process</h2>
<table><thead><tr><th>process</th><th>CPU mean</th><th>CPU p95</th><th>RSS start MiB</th><th>RSS end MiB</th><th>RSS max MiB</th><th>processes</th></tr></thead><tbody>${proc}</tbody></table>
<h2>Server CPU by stage (threads, % of one core)</h2>
<table><tbody>${threads}</tbody></table>
<p class="meta">Share of wall time a frame was in each server stage (%, per-frame marks, overlapping frames merged; tracking and engine run on the JS thread):</p>
<table><tbody>${busy}</tbody></table>
<p class="meta">Browser renderer threads (% of one core; all renderer processes of the page together):</p>
<table><tbody>${rthreads}</tbody></table>
${soak}
<h2>Method</h2>
<ul>${r.method.notes.map((n) => `<li>${esc(n)}</li>`).join('')}</ul>
<script>${js}</script>
<script>
const D = ${json(data)};
const W = 540, H = 240;
const palette = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
const el = (id) => document.getElementById(id);
new uPlot({ title: 'Glass-to-glass latency per frame (ms)', width: W, height: H, scales: { x: { time: false } },
  axes: [{ label: 'seconds' }, {}],
  series: [{ label: 's' }, { label: 'glass-to-glass', stroke: '#1f77b4', width: 0, points: { show: true, size: 3, fill: '#1f77b4' } }] },
  [D.frames.t, D.frames.glass], el('plot-latency'));
new uPlot({ title: 'Histogram of glass-to-glass latency', width: W, height: H, scales: { x: { time: false } },
  axes: [{ label: 'ms' }, { label: 'frames' }],
  series: [{ label: 'ms' }, { label: 'frames', stroke: '#1f77b4', fill: '#1f77b455', paths: uPlot.paths.bars({ size: [0.95, 100] }) }] },
  [D.hist.x, D.hist.y], el('plot-histogram'));
{
  // stacked: cumulative sums, drawn largest first so each stage shows as its own band
  const n = D.stacked.names.length;
  const cum = [];
  let acc = D.stacked.t.map(() => 0);
  for (let i = 0; i < n; i++) { acc = acc.map((a, j) => a + (D.stacked.values[i][j] || 0)); cum.push(acc); }
  const order = [...Array(n).keys()].reverse();
  new uPlot({ title: 'Stages per second (mean ms, stacked)', width: W, height: H, scales: { x: { time: false }, y: { range: (u, lo, hi) => [0, hi * 1.05] } },
    axes: [{ label: 'seconds' }, { label: 'ms' }],
    series: [{ label: 's' }, ...order.map((i) => ({ label: D.stacked.names[i], stroke: D.stacked.colours[i], fill: D.stacked.colours[i], paths: uPlot.paths.bars({ size: [0.9, 60] }),
      value: (u, v, si, idx) => idx == null ? '' : (D.stacked.values[i][idx] ?? 0).toFixed(1) }))] },
    [D.stacked.t, ...order.map((i) => cum[i])], el('plot-stages'));
}
for (const [id, key, title] of [['plot-cpu', 'cpu', 'CPU per process (% of one core)'], ['plot-rss', 'rss', 'Resident memory per process (MiB)']]) {
  const names = Object.keys(D.resources[key]);
  new uPlot({ title, width: W, height: H, scales: { x: { time: false } }, axes: [{ label: 'seconds' }, {}],
    series: [{ label: 's' }, ...names.map((nm, i) => ({ label: nm, stroke: palette[i % palette.length], width: 1.5 }))] },
    [D.resources.t, ...names.map((nm) => D.resources[key][nm])], el(id));
}
</script>
</body></html>
`;
}
