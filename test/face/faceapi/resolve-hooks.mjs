// Node module resolve hooks (module.register) for loading @vladmandic/face-api's un-bundled ESM build in tests.
// That build imports "@tensorflow/tfjs" (not installed: it pulls in layers, data and the WebGL/WASM backends)
// plus the WebGL and WASM backends; they are answered with TF.js core + the pure-JS CPU backend, so the oracle
// is face-api's own network code on the CPU backend.
const here = (file) => new URL(file, import.meta.url).href;
const STAND_INS = {
  '@tensorflow/tfjs/dist/index.js': here('./tfjs-cpu.mjs'),
  '@tensorflow/tfjs-backend-webgl/dist/index.js': here('./no-backend.mjs'),
  '@tensorflow/tfjs-backend-wasm/dist/index.js': here('./no-backend.mjs'),
};

export async function resolve(specifier, context, nextResolve) {
  const url = STAND_INS[specifier];
  if (url) return { url, shortCircuit: true };
  return nextResolve(specifier, context);
}
