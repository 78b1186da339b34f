/**
 * Checks a set of reference photos of one person before a session uses them (issue 20): the count against the
 * engine's limit, a face in every extra photo, and each extra photo's identity distance to the main portrait with
 * `eval`'s identity model (dlib-resnet by default). A distance above `eval`'s same-person bound (its per-frame
 * threshold, DEFAULT_THRESHOLDS.identityWorstDistance = 0.6, dlib's own bound) is a warning, not an error: the photos
 * may still be one person (a big change of age, make-up, lighting), and X-Portrait would simply blend both looks.
 *
 * The main portrait keeps its own rules (a stylised drawing with no readable face still animates, unaligned); only
 * the extra photos must have a face, since they exist to add appearance of the same face.
 */
import type { PortraitAnalyzer } from '../face/portrait-analyzer.ts';
import type { FaceObservation } from '../face/types.ts';
import type { RgbImage } from '../media/frame.ts';
import type { IdentityEmbedder } from './identity.ts';
import { DEFAULT_IDENTITY_MODEL, embeddingDistance, IDENTITY_MODELS } from './identity-models.ts';

export type ReferenceSetErrorCode = 'too_many' | 'no_face' | 'not_an_image';

export class ReferenceSetError extends Error {
  constructor(
    readonly code: ReferenceSetErrorCode,
    message: string,
    /** 0-based position of the photo at fault (absent for the set as a whole). */
    readonly index?: number,
  ) {
    super(message);
    this.name = 'ReferenceSetError';
  }
}

/**
 * `eval`'s per-frame same-person bound (DEFAULT_THRESHOLDS.identityWorstDistance), which is the default identity
 * model's own bound (dlib-resnet: 0.6); read from the light model table so the server does not load eval's video code.
 */
export const SAME_PERSON_DISTANCE = IDENTITY_MODELS[DEFAULT_IDENTITY_MODEL].sameIdentityDistance ?? 0.6;

export interface ReferenceSetReport {
  /** Face of every photo (undefined for a main portrait with no readable face). */
  faces: Array<FaceObservation | undefined>;
  /** Identity distance of each photo to the main one (index 0: 0; NaN when not measured). */
  distances: number[];
  /** Photos (0-based) whose distance is above the bound. */
  differentPerson: number[];
  warnings: string[];
  threshold: number;
}

export interface ReferenceSetCheckOptions {
  analyzer: Pick<PortraitAnalyzer, 'analyze'>;
  /** Identity model (omit to skip the identity comparison). */
  embedder?: Pick<IdentityEmbedder, 'describe'>;
  maxReferences: number;
  threshold?: number;
  /** Faces already known (e.g. the main portrait's, analysed at upload), by position. */
  knownFaces?: Array<FaceObservation | undefined>;
}

const ordinal = (i: number) => (i === 0 ? 'the main portrait' : `reference photo ${i + 1}`);

export async function checkReferenceSet(images: readonly RgbImage[], o: ReferenceSetCheckOptions): Promise<ReferenceSetReport> {
  if (!images.length) throw new ReferenceSetError('not_an_image', 'no portrait given');
  if (images.length > o.maxReferences) {
    throw new ReferenceSetError('too_many', `${images.length} reference photos, at most ${o.maxReferences}: remove ${images.length - o.maxReferences}`);
  }
  const threshold = o.threshold ?? SAME_PERSON_DISTANCE;
  const faces: Array<FaceObservation | undefined> = [];
  const warnings: string[] = [];
  for (const [i, img] of images.entries()) {
    if (!img || img.width < 1 || img.height < 1 || img.data.length < img.width * img.height * 3) {
      throw new ReferenceSetError('not_an_image', `${ordinal(i)} is not a valid RGB image`, i);
    }
    const known = o.knownFaces?.[i];
    if (known && !known.lost && known.frameWidth === img.width && known.frameHeight === img.height) {
      faces.push(known);
      continue;
    }
    try {
      faces.push((await o.analyzer.analyze(img)).face);
    } catch (err) {
      if (i > 0) throw new ReferenceSetError('no_face', `${ordinal(i)}: ${(err as Error).message.replace(/in the portrait/, 'in it')} (every extra photo must show the same person's face)`, i);
      faces.push(undefined);
      warnings.push(`the main portrait has no readable face (${(err as Error).message}); the extra photos are not compared with it`);
    }
  }
  const distances = images.map((_, i) => (i === 0 ? 0 : Number.NaN));
  const differentPerson: number[] = [];
  if (o.embedder && faces[0] && images.length > 1) {
    const main = await o.embedder.describe({ ...images[0], format: 'rgb' }, faces[0].landmarks);
    for (let i = 1; i < images.length; i++) {
      const e = await o.embedder.describe({ ...images[i], format: 'rgb' }, faces[i]!.landmarks);
      const d = embeddingDistance(e.raw, main.raw);
      distances[i] = d;
      if (d > threshold) {
        differentPerson.push(i);
        warnings.push(`${ordinal(i)} looks like a different person (identity distance ${d.toFixed(2)} to the main portrait, above eval's same-person bound ${threshold}): its appearance will be blended in; use photos of one person`);
      }
    }
  }
  return { faces, distances, differentPerson, warnings, threshold };
}

/**
 * A checker that opens the portrait analyzer and the identity model on first use and keeps them (the server checks
 * every multi-photo offer with one). Checks run one at a time: the models' sessions are not shared concurrently.
 */
export class ReferenceChecker {
  #models: Promise<{ analyzer: PortraitAnalyzer; embedder: IdentityEmbedder }> | undefined;
  #queue: Promise<unknown> = Promise.resolve();

  async check(images: readonly RgbImage[], maxReferences: number): Promise<ReferenceSetReport> {
    const run = this.#queue.then(async () => {
      this.#models ??= (async () => {
        const { createPortraitAnalyzer } = await import('../face/node/index.ts');
        const { IdentityEmbedder } = await import('./identity.ts');
        return { analyzer: await createPortraitAnalyzer(), embedder: await IdentityEmbedder.open() };
      })();
      const m = await this.#models.catch((err: unknown) => {
        this.#models = undefined;
        throw err;
      });
      return checkReferenceSet(images, { ...m, maxReferences });
    });
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async close(): Promise<void> {
    const m = await this.#models?.catch(() => undefined);
    this.#models = undefined;
    await Promise.allSettled([m?.analyzer.close(), m?.embedder.close()]);
  }
}
