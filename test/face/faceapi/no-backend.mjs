// Stands in for face-api's WebGL and WASM backend imports in tests: the oracle runs on the CPU backend only.
export {};
