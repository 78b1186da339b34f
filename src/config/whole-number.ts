/**
 * A whole number from a flag or an environment variable (a string) or from code (a number), in [min, max].
 * With `name`, every message names the setting ("--size must be at least 64"); without, the caller's error
 * formatting adds it (serve's config prefixes each issue with its flag).
 */
import { z } from 'zod';

export function wholeNumber(min: number, max: number, name?: string) {
  const say = (what: string) => (name ? `${name} ${what}` : what);
  return z
    .union([z.number(), z.string().trim().regex(/^\d+$/, say('must be a whole number'))])
    .transform(Number)
    .pipe(
      name
        ? z.number().int(say('must be a whole number')).min(min, say(`must be at least ${min}`)).max(max, say(`must be at most ${max}`))
        : z.number().int().min(min).max(max),
    );
}
