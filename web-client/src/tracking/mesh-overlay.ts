/**
 * The optional face-mesh overlay on the local preview: a canvas laid over the <video> (same box), the tracked
 * landmarks drawn as dots (irises ringed), mapped from the frame's pixels to where `object-fit: contain` shows them.
 */
import { LANDMARK_COUNT, MESH_POINTS } from '../../../src/face/face-mesh.ts';

export class MeshOverlay {
  #canvas: HTMLCanvasElement | undefined;
  #video: HTMLVideoElement | undefined;
  #enabled = false;

  /** Lay the overlay over `video` (its parent must be a positioning context; the page's <figure> is made one). */
  attach(video: HTMLVideoElement): void {
    if (this.#video === video) return;
    this.detach();
    const c = document.createElement('canvas');
    c.className = 'mesh-overlay';
    c.setAttribute('aria-hidden', 'true');
    Object.assign(c.style, { position: 'absolute', left: `${video.offsetLeft}px`, top: `${video.offsetTop}px`, pointerEvents: 'none' });
    const parent = video.parentElement;
    if (parent && getComputedStyle(parent).position === 'static') parent.style.position = 'relative';
    video.after(c);
    this.#canvas = c;
    this.#video = video;
    c.hidden = !this.#enabled;
  }

  detach(): void {
    this.#canvas?.remove();
    this.#canvas = undefined;
    this.#video = undefined;
  }

  get enabled(): boolean {
    return this.#enabled;
  }

  set enabled(on: boolean) {
    this.#enabled = on;
    if (this.#canvas) this.#canvas.hidden = !on;
    if (!on) this.clear();
  }

  clear(): void {
    const c = this.#canvas;
    c?.getContext('2d')?.clearRect(0, 0, c.width, c.height);
  }

  /** Draw one frame's landmarks (pixels of a width x height frame); undefined clears (no face). */
  draw(landmarks: Float32Array | undefined, width: number, height: number): void {
    const c = this.#canvas;
    const v = this.#video;
    if (!this.#enabled || !c || !v) return;
    const w = v.clientWidth;
    const h = v.clientHeight;
    if (c.width !== w || c.height !== h) {
      c.width = w;
      c.height = h;
      c.style.left = `${v.offsetLeft}px`;
      c.style.top = `${v.offsetTop}px`;
    }
    const ctx = c.getContext('2d');
    if (!ctx) return;
    ctx.clearRect(0, 0, w, h);
    if (!landmarks) return;
    // object-fit: contain
    const s = Math.min(w / width, h / height);
    const ox = (w - width * s) / 2;
    const oy = (h - height * s) / 2;
    ctx.fillStyle = 'rgba(80, 230, 160, 0.85)';
    const r = Math.max(0.8, s * 1.2);
    for (let i = 0; i < MESH_POINTS; i++) ctx.fillRect(ox + landmarks[3 * i] * s - r / 2, oy + landmarks[3 * i + 1] * s - r / 2, r, r);
    ctx.strokeStyle = 'rgba(255, 210, 80, 0.95)';
    ctx.lineWidth = 1;
    for (const start of [MESH_POINTS, MESH_POINTS + 5]) {
      if (start + 5 > LANDMARK_COUNT) break;
      const cx = landmarks[3 * start];
      const cy = landmarks[3 * start + 1];
      const rad = Math.hypot(landmarks[3 * (start + 1)] - cx, landmarks[3 * (start + 1) + 1] - cy) * s;
      ctx.beginPath();
      ctx.arc(ox + cx * s, oy + cy * s, Math.max(1, rad), 0, 2 * Math.PI);
      ctx.stroke();
    }
  }
}
