// Stands in for "@tensorflow/tfjs" when face-api's un-bundled ESM build is loaded in tests (see resolve-hooks.mjs):
// TF.js core with the pure-JS CPU backend, nothing else. The full "@tensorflow/tfjs" package also registers
// "chained" tensor methods; face-api's recognition path calls four of them, added here the way tfjs-core's own
// chained-op modules add them.
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';

const proto = tf.Tensor.prototype;
proto.as3D ??= function as3D(rows, columns, depth) {
  this.throwIfDisposed();
  return tf.reshape(this, [rows, columns, depth]);
};
proto.as4D ??= function as4D(batch, rows, columns, depth) {
  this.throwIfDisposed();
  return tf.reshape(this, [batch, rows, columns, depth]);
};
proto.div ??= function div(b) {
  this.throwIfDisposed();
  return tf.div(this, b);
};
proto.mean ??= function mean(axis, keepDims) {
  this.throwIfDisposed();
  return tf.mean(this, axis, keepDims);
};

export * from '@tensorflow/tfjs-core';
