/**
 * The bundled sample portrait: a cartoon face drawn here as SVG and rendered by sharp (librsvg), so the repository
 * ships no third-party image and the sample carries the project's own licence (Apache-2.0).
 */
import sharp from 'sharp';

export const SAMPLE_PORTRAIT_SIZE = 512;

export function samplePortraitSvg(size = SAMPLE_PORTRAIT_SIZE): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${size}" height="${size}" viewBox="0 0 512 512">
  <defs>
    <radialGradient id="bg" cx="50%" cy="40%" r="75%"><stop offset="0" stop-color="#9ecbe8"/><stop offset="1" stop-color="#3f6f9a"/></radialGradient>
    <radialGradient id="skin" cx="45%" cy="40%" r="65%"><stop offset="0" stop-color="#ffe0c4"/><stop offset="1" stop-color="#e7b08a"/></radialGradient>
  </defs>
  <rect width="512" height="512" fill="url(#bg)"/>
  <path d="M96 512 C110 420 180 380 256 380 C332 380 402 420 416 512 Z" fill="#3b4a6b"/>
  <rect x="226" y="330" width="60" height="70" rx="20" fill="#e2a882"/>
  <ellipse cx="256" cy="236" rx="128" ry="150" fill="#5a3a22"/>
  <ellipse cx="256" cy="250" rx="112" ry="134" fill="url(#skin)"/>
  <ellipse cx="146" cy="256" rx="16" ry="26" fill="#e7b08a"/>
  <ellipse cx="366" cy="256" rx="16" ry="26" fill="#e7b08a"/>
  <path d="M140 200 C150 110 362 110 372 200 C340 150 180 150 140 200 Z" fill="#5a3a22"/>
  <path d="M178 196 Q208 180 236 194" stroke="#4a2e1a" stroke-width="8" fill="none" stroke-linecap="round"/>
  <path d="M276 194 Q304 180 334 196" stroke="#4a2e1a" stroke-width="8" fill="none" stroke-linecap="round"/>
  <ellipse cx="208" cy="236" rx="26" ry="18" fill="#fff"/>
  <ellipse cx="304" cy="236" rx="26" ry="18" fill="#fff"/>
  <circle cx="210" cy="237" r="12" fill="#3d6b3a"/><circle cx="306" cy="237" r="12" fill="#3d6b3a"/>
  <circle cx="210" cy="237" r="6" fill="#111"/><circle cx="306" cy="237" r="6" fill="#111"/>
  <circle cx="214" cy="233" r="3" fill="#fff"/><circle cx="310" cy="233" r="3" fill="#fff"/>
  <path d="M256 246 Q246 290 238 298 Q256 306 274 298" stroke="#c98b66" stroke-width="5" fill="none" stroke-linecap="round"/>
  <path d="M212 326 Q256 356 300 326 Q256 340 212 326 Z" fill="#b5484a" stroke="#8a3034" stroke-width="4" stroke-linejoin="round"/>
  <ellipse cx="184" cy="296" rx="20" ry="10" fill="#f2a0a0" opacity="0.45"/>
  <ellipse cx="328" cy="296" rx="20" ry="10" fill="#f2a0a0" opacity="0.45"/>
</svg>`;
}

let cachedPng: Promise<Buffer> | undefined;

/** The sample as PNG bytes (rendered once per process). */
export function samplePortraitPng(): Promise<Buffer> {
  cachedPng ??= sharp(Buffer.from(samplePortraitSvg())).png().toBuffer();
  return cachedPng;
}
