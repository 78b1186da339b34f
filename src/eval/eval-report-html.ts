/**
 * The self-contained HTML page of an eval report: summary and checks, plots (uPlot, MIT, inlined from
 * node_modules with its CSS), and a frame strip (driving over result, JPEG data URLs). One file, no network.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { EvalReport, EvaluateOutput } from './evaluate.ts';

const require = createRequire(import.meta.url);

function uplotAssets(): { js: string; css: string } {
  const dir = join(dirname(require.resolve('uplot/package.json')), 'dist');
  return { js: readFileSync(join(dir, 'uPlot.iife.min.js'), 'utf8'), css: readFileSync(join(dir, 'uPlot.min.css'), 'utf8') };
}

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
const fmt = (v: number, d = 3) => (Number.isFinite(v) ? v.toFixed(d) : '–');
const dataUrl = (b: Buffer | undefined) => (b ? `data:image/jpeg;base64,${b.toString('base64')}` : '');
/** JSON with NaN as null (uPlot draws gaps), safe inside <script>. */
const json = (v: unknown) => JSON.stringify(v, (_k, x) => (typeof x === 'number' && !Number.isFinite(x) ? null : x)).replace(/</g, '\\u003c');

/** Identity figures: distance (the checked metric for dlib-resnet) and cosine similarity. */
function identityRows(r: EvalReport): string {
  const id = r.identity;
  const bound = id.sameIdentityDistance !== undefined ? `, &lt; ${fmt(id.sameIdentityDistance, 2)} = same person` : '';
  const distance = `<tr><td>identity (embedding distance to the portrait${bound})</td><td>result ${fmt(id.resultVsPortrait.meanDistance)} (max ${fmt(id.resultVsPortrait.maxDistance)})</td><td>driving (different person) ${fmt(id.drivingVsPortrait.meanDistance)}</td></tr>`;
  const cosine = `<tr><td>identity (cosine similarity to the portrait)</td><td>result ${fmt(id.resultVsPortrait.mean)} (min ${fmt(id.resultVsPortrait.min)})</td><td>driving (different person) ${fmt(id.drivingVsPortrait.mean)}</td></tr>`;
  return id.metric === 'distance' ? `${distance}\n${cosine}` : cosine;
}

function identityPlotTitle(r: EvalReport): string {
  return r.identity.metric === 'distance' ? `Identity: embedding distance to the portrait (${r.identityModel})` : `Identity: cosine similarity to the portrait (${r.identityModel})`;
}

export function renderReportHtml(out: EvaluateOutput): string {
  const r: EvalReport = out.report;
  const { js, css } = uplotAssets();
  const d = r.perFrame.driving;
  const s = r.perFrame.result;
  const x = d.map((_, i) => i);
  const series = {
    x,
    eye: [d.map((f) => f.eyeOpen), s.map((f) => f.eyeOpen)],
    mouth: [d.map((f) => f.mouth), s.map((f) => f.mouth)],
    yaw: [d.map((f) => f.yaw), s.map((f) => f.yaw)],
    pitch: [d.map((f) => f.pitch), s.map((f) => f.pitch)],
    roll: [d.map((f) => f.roll), s.map((f) => f.roll)],
    identity: r.identity.metric === 'distance' ? [s.map((f) => f.identityDistance), d.map((f) => f.identityDistance)] : [s.map((f) => f.identity), d.map((f) => f.identity)],
    jitter: [r.perFrame.jitter.driving, r.perFrame.jitter.result],
  };
  const checks = r.checks
    .map(
      (c) =>
        `<tr class="${c.pass ? 'ok' : 'bad'}"><td>${esc(c.name)}</td><td>${fmt(c.value)}</td><td>${c.kind === 'min' ? '≥' : '≤'} ${fmt(c.threshold)}</td><td>${c.pass ? 'pass' : 'FAIL'}</td></tr>`,
    )
    .join('\n');
  const strip = out.strip
    .map(
      (f) =>
        `<figure><img src="${dataUrl(f.driving)}" alt="driving frame ${f.index}"><img src="${dataUrl(f.result)}" alt="result frame ${f.index}"><figcaption>frame ${f.index}</figcaption></figure>`,
    )
    .join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>xportrait-cam eval: ${esc(r.inputs.result)}</title>
<style>${css}
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:20px} h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse} td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left}
tr.bad td{color:#b00020;font-weight:600} tr.ok td:last-child{color:#0a7a2f}
.verdict{display:inline-block;padding:4px 10px;border-radius:4px;color:#fff;background:${r.pass ? '#0a7a2f' : '#b00020'}}
.strip{display:flex;gap:6px;overflow-x:auto} .strip figure{margin:0;text-align:center;font-size:12px}
.strip img{display:block;width:120px;height:120px;object-fit:cover}
.plots{display:grid;grid-template-columns:1fr 1fr;gap:12px}
.meta{color:#555}
</style></head><body>
<h1>xportrait-cam eval <span class="verdict">${r.pass ? 'PASS' : 'FAIL'}</span></h1>
<p class="meta">portrait <code>${esc(r.inputs.portrait)}</code> · driving <code>${esc(r.inputs.driving)}</code> · result <code>${esc(r.inputs.result)}</code><br>
frames: driving ${r.frames.driving}, result ${r.frames.result}, compared ${r.frames.compared} · identity model <code>${esc(r.identityModel)}</code> · ${r.seconds.toFixed(1)} s</p>
<h2>Checks</h2>
<table><thead><tr><th>figure</th><th>value</th><th>threshold</th><th></th></tr></thead><tbody>
${checks}
</tbody></table>
<h2>Figures</h2>
<table><tbody>
<tr><td>eye openness</td><td>correlation ${fmt(r.expression.eye.correlation)}</td><td>mean abs error ${fmt(r.expression.eye.meanAbsError)}</td></tr>
<tr><td>mouth opening</td><td>correlation ${fmt(r.expression.mouth.correlation)}</td><td>mean abs error ${fmt(r.expression.mouth.meanAbsError)}</td></tr>
<tr><td>yaw / pitch / roll</td><td>correlation ${fmt(r.pose.yaw.correlation, 2)} / ${fmt(r.pose.pitch.correlation, 2)} / ${fmt(r.pose.roll.correlation, 2)}</td><td>mean abs error ${fmt(r.pose.yaw.meanAbsErrorDeg, 2)}° / ${fmt(r.pose.pitch.meanAbsErrorDeg, 2)}° / ${fmt(r.pose.roll.meanAbsErrorDeg, 2)}°</td></tr>
${identityRows(r)}
<tr><td>landmark jitter (median, inter-ocular units)</td><td>result ${fmt(r.jitter.result, 4)}</td><td>driving ${fmt(r.jitter.driving, 4)} (ratio ${fmt(r.jitter.ratio, 2)})</td></tr>
<tr><td>frames without a face</td><td>result ${r.noFace.result}</td><td>driving ${r.noFace.driving}</td></tr>
</tbody></table>
<h2>Frames</h2>
<div class="strip"><figure><img src="${dataUrl(out.portraitThumbnail)}" alt="portrait"><figcaption>portrait</figcaption></figure>
${strip}</div>
<p class="meta">Each column: the driving frame above, the result below.</p>
<h2>Per frame</h2>
<div class="plots" id="plots"></div>
<script>${js}</script>
<script>
const S = ${json(series)};
const plots = [
  ['Eye openness (0 shut, 1 open)', S.eye, ['driving', 'result']],
  ['Mouth opening (inter-ocular units)', S.mouth, ['driving', 'result']],
  ['Yaw (deg)', S.yaw, ['driving', 'result']],
  ['Pitch (deg)', S.pitch, ['driving', 'result']],
  ['Roll (deg)', S.roll, ['driving', 'result']],
  [${json(identityPlotTitle(r))}, S.identity, ['result', 'driving (different person)']],
  ['Landmark jitter (inter-ocular units)', S.jitter, ['driving', 'result']],
];
const colours = ['#1f77b4', '#d62728'];
const root = document.getElementById('plots');
for (const [title, ys, names] of plots) {
  const el = document.createElement('div');
  root.appendChild(el);
  new uPlot({ title, width: 520, height: 220, scales: { x: { time: false } },
    series: [{ label: 'frame' }, ...names.map((n, i) => ({ label: n, stroke: colours[i], width: 1.5, spanGaps: false }))],
    axes: [{ label: 'frame' }, {}] }, [S.x, ...ys], el);
}
</script>
</body></html>
`;
}
